"""The Pokemon tasks (battle and catching; Red/Blue and Yellow) end to end on the real PyBoy emulator,
on rtcore's homebrew cartridge that writes the RAM addresses the rewards read (no Pokemon ROM)."""

from __future__ import annotations

import pytest

import rtcore
from rtcore.envs import gameboy, pokemon
from rtcore.envs.pokemon import PokemonCatch
from rtcore.envs.pokemon_testrom import write_rom

BUTTONS = ("a", "b", "select", "right", "start")
A, B, SELECT, RIGHT, START = 1, 2, 3, 4, 5


@pytest.fixture(params=["red", "yellow"])
def cart(request, tmp_path):
    version = request.param
    rom = write_rom(tmp_path / f"{version}.gb", version)
    state = tmp_path / f"{version}.state"
    gameboy.record_state(rom, "wait:10", state, titles=(f"POKEMON {version.upper()}",))
    return version, rom, state


def _make(version, rom, state, catch=False):
    env_id = f"gb/Pokemon{version.capitalize()}" + ("-Catch" if catch else "")
    return rtcore.make(env_id, rom=rom, states=[state], buttons=BUTTONS)


def test_battle_reward_from_ram_on_the_emulator(cart):
    version, rom, state = cart
    env = _make(version, rom, state)
    try:
        env.reset(seed=0)
        a = pokemon.VERSIONS[version]
        assert env.ram[a.is_in_battle] == pokemon.WILD and env.ram[a.enemy_mon_hp + 1] == 50
        assert env.step(0)[1:3] == (0.0, False)
        assert env.step(A)[1:3] == (1.0, True)  # the wild opponent faints: its side is wiped out
        env.reset(seed=1)
        assert env.step(B)[1:3] == (-1.0, True)  # ours faints: a party of one is wiped out
    finally:
        env.close()


def test_catching_reward_from_ram_on_the_emulator(cart):
    version, rom, state = cart
    env = _make(version, rom, state, catch=True)
    try:
        env.reset(seed=0)
        assert env.step(SELECT)[1:3] == (1.0, False)  # wNumInBox + 1: caught
        assert env.step(RIGHT)[1:3] == (0.0, False)  # once per episode
        assert env.step(START)[1:3] == (0.0, True)  # the battle ends after the catch
        env.reset(seed=0)
        assert env.step(RIGHT)[1:3] == (1.0, False)  # a new species in wPokedexOwned: caught
        env.reset(seed=0)
        assert env.step(0)[1:3] == (0.0, False)
        assert env.step(START)[1:3] == (-1.0, True)  # the battle ends without a catch
    finally:
        env.close()


def test_yellow_addresses_are_the_symbol_files_ones():
    # pokeyellow.sym (pokemon-speedrunning/symfiles), cited in rtcore/envs/pokemon.py
    y = pokemon.YELLOW
    assert (y.is_in_battle, y.player_mon_number, y.battle_mon_hp, y.enemy_mon_hp, y.enemy_mon_party_pos) == (
        0xD056, 0xCC2F, 0xD014, 0xCFE5, 0xCFE7)
    assert (y.party_count, y.party_mon1_hp, y.enemy_party_count, y.enemy_mon1_hp, y.num_in_box, y.pokedex_owned) == (
        0xD162, 0xD16B, 0xD89B, 0xD8A4, 0xDA7F, 0xD2F6)
    r = pokemon.RED_BLUE
    assert (r.num_in_box, r.pokedex_owned, pokemon.POKEDEX_OWNED_BYTES) == (0xDA80, 0xD2F7, 19)  # pokered.sym
    assert y.titles == ("POKEMON YELLOW",)


def test_catch_task_on_synthetic_ram_counts_a_loss_as_minus_one():
    m = bytearray(0x10000)
    m[pokemon.W_IS_IN_BATTLE] = pokemon.WILD
    game = PokemonCatch()
    game.reset(m)
    m[pokemon.W_IS_IN_BATTLE] = pokemon.LOST  # -1 as the authors' signed byte: the battle was lost
    assert game.step(m) == (-1.0, False)
    m[pokemon.W_IS_IN_BATTLE] = 0
    assert game.step(m) == (0.0, True)  # already counted; over


def test_bad_version_and_task():
    with pytest.raises(ValueError, match="version must be 'red', 'blue' or 'yellow'"):
        pokemon.PokemonEnv(version="green", states=[b"x"])
    with pytest.raises(ValueError, match="task must be 'battle' or 'catch'"):
        pokemon.PokemonEnv(version="red", task="trade", states=[b"x"])
