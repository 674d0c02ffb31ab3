"""Game Boy: the real PyBoy env on rtcore's own test cartridge, ROM checks, the Tetris and Pokemon RAM
logic on synthetic RAM states, the save-state CLI; real-ROM tests when $RTCORE_ROM_DIR is set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import rtcore
from rtcore.envs import gameboy, pokemon, testrom, tetris
from rtcore.envs.gameboy import GameBoyEnv, check_rom, header_checksum, read_header
from rtcore.envs.pokemon import PokemonBattle
from rtcore.envs.tetris import TetrisEnv, TetrisGame, tetris_score

A, B, LEFT, UP, RIGHT, DOWN = 1, 2, 3, 4, 5, 6  # the default action set after NOOP (0)


@pytest.fixture
def rom(tmp_path):
    return testrom.write_rom(tmp_path / "rtcoretest.gb")


# --- the test cartridge on the real emulator --------------------------------------------------------


def test_test_rom_has_a_valid_header(rom):
    data = Path(rom).read_bytes()
    assert len(data) == 32 * 1024
    h = read_header(data)
    assert h.title == "RTCORETEST" and h.cartridge_type == 0 and h.header_checksum == h.computed_checksum


def test_scripted_inputs_give_the_expected_rewards(rom):
    env = rtcore.make("gb/TestRom", rom=rom)
    try:
        assert env.frame_time == pytest.approx(1 / 59.7275) and env.default_action == 0
        assert env.buttons == ("a", "b", "left", "up", "right", "down") and env.action_space.n == 7
        obs, _ = env.reset(seed=0)
        assert obs.shape == (84, 84) and obs.dtype == np.uint8
        screen = env._pb.screen.ndarray
        assert (screen[..., 0] == screen[..., 1]).all() and (screen[..., 0] == screen[..., 2]).all()  # grey palette
        script = [A, 0, A, 0, A, 0, B, 0, RIGHT, 0, LEFT, UP, DOWN, 0]
        rewards = [env.step(a)[1] for a in script]
        # A: +1 per new press, B: -1, RIGHT: +16, other directions: nothing
        assert rewards == [1, 0, 1, 0, 1, 0, -1, 0, 16, 0, 0, 0, 0, 0]
        assert env.ram[testrom.SCORE] == 18
        # Holding A across steps is one press: the cartridge counts edges.
        assert [env.step(a)[1] for a in (A, A, A, 0, A)] == [1, 0, 0, 0, 1]
    finally:
        env.close()


def test_observation_follows_the_score_and_reset_restores_the_start(rom):
    env = rtcore.make("gb/TestRom", rom=rom)
    first, _ = env.reset(seed=0)
    seen = {}
    for score in range(1, 4):
        env.step(A)
        obs = env.step(0)[0]
        obs = env.step(0)[0]  # a whole frame drawn with the new palette
        seen[score] = obs.mean()
    assert len({round(v) for v in seen.values()}) == 3  # shade = score & 3: three different screens
    again, _ = env.reset(seed=0)
    np.testing.assert_array_equal(first, again)
    assert env.ram[testrom.SCORE] == 0
    env.close()


def test_start_ends_the_episode(rom):
    env = GameBoyEnv(rom, testrom._ram_game()(), buttons=("a", "start"))
    env.reset()
    assert env.step(1)[1:3] == (1.0, False)
    _, _, terminated, truncated, _ = env.step(2)
    assert terminated and not truncated
    env.close()


def test_hold_frames_holds_a_press(rom):
    env = rtcore.make("gb/TestRom", rom=rom, hold_frames=3)
    env.reset()
    # A held frames 1-3 then released; pressing again on frame 4 re-presses with no released frame
    # between (the game sees one long press); frame 7 has no button, so the press on 8 is new.
    assert [env.step(a)[1] for a in (A, 0, 0, A, 0, 0, 0, A)] == [1, 0, 0, 0, 0, 0, 0, 1]
    env.close()


def test_plain_reward_fn_and_truncation(rom):
    env = GameBoyEnv(rom, lambda ram: float(ram[testrom.SCORE]), terminated_fn=lambda ram: ram[testrom.SCORE] >= 2,
                     max_episode_steps=5)
    env.reset()
    assert [env.step(a)[1:4] for a in (A, 0, A)] == [(1.0, False, False), (1.0, False, False), (2.0, True, False)]
    env.reset()
    out = [env.step(0)[3] for _ in range(5)]
    assert out == [False, False, False, False, True]
    env.close()


def test_episodes_start_from_sampled_save_states(rom, tmp_path):
    env = rtcore.make("gb/TestRom", rom=rom)
    env.reset()
    for a in (A, 0, A, 0, A):
        env.step(a)
    three = env.save_state()
    env.close()
    path = tmp_path / "three.state"
    path.write_bytes(three)
    env = GameBoyEnv(rom, testrom._ram_game()(), states=[path])
    for seed in range(3):
        env.reset(seed=seed)
        assert env.ram[testrom.SCORE] == 3
        assert env.step(A)[1] == 1.0  # reward counts from the state's score
    env.close()


def test_record_state_cli_plays_the_script(rom, tmp_path):
    from rtcore.cli import main

    out = tmp_path / "s.state"
    assert main(["gb-record-state", rom, str(out), "--script", "a,wait:3,a:2,b,right", "--title", "RTCORETEST"]) == 0
    env = GameBoyEnv(rom, testrom._ram_game()(), states=[out])
    env.reset()
    assert env.ram[testrom.SCORE] == 1 + 1 - 1 + 16
    env.close()
    with pytest.raises(ValueError, match=r"unknown step 'jump'"):
        gameboy.parse_script("a,jump")
    with pytest.raises(ValueError, match="frame count must be >= 1"):
        gameboy.parse_script("wait:0")


# --- bad input --------------------------------------------------------------------------------------


def test_missing_rom_is_refused():
    with pytest.raises(ValueError, match=r"gb/Tetris needs rom=<path to your Game Boy ROM> \(the TETRIS cartridge\)"):
        rtcore.make("gb/Tetris")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rtcore.make("gb/Tetris", rom="/nonexistent/tetris.gb")


def test_wrong_game_is_refused_by_title(rom):
    with pytest.raises(ValueError, match=r"wrong game for gb/Tetris: its header title is 'RTCORETEST', expected 'TETRIS'"):
        rtcore.make("gb/Tetris", rom=rom)
    with pytest.raises(ValueError, match=r"expected 'POKEMON BLUE'"):
        rtcore.make("gb/PokemonBlue", rom=rom, states=[b"x"])


def test_non_game_boy_files_are_refused(tmp_path, rom):
    small = tmp_path / "small.gb"
    small.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="is not a Game Boy ROM: 1000 bytes"):
        GameBoyEnv(small)
    bad = bytearray(Path(rom).read_bytes())
    bad[0x134] ^= 0xFF  # title byte changed, checksum not
    corrupt = tmp_path / "corrupt.gb"
    corrupt.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="is not a Game Boy ROM: header checksum at 0x14D"):
        GameBoyEnv(corrupt)


def test_bad_actions_and_options_are_refused(rom):
    env = rtcore.make("gb/TestRom", rom=rom)
    env.reset()
    for action in (7, -1, 0.5, "a"):
        with pytest.raises(ValueError, match=r"outside the action space Discrete\(7\) of gb/TestRom"):
            env.step(action)
    env.close()
    with pytest.raises(ValueError, match="buttons must be distinct names"):
        GameBoyEnv(rom, buttons=("a", "jump"))
    with pytest.raises(ValueError, match="hold_frames must be an int >= 1"):
        GameBoyEnv(rom, hold_frames=0)
    with pytest.raises(ValueError, match="needs states="):
        rtcore.make("gb/PokemonRed", rom=rom)
    with pytest.raises(FileNotFoundError, match="save state .* does not exist"):
        GameBoyEnv(rom, states=["/nonexistent.state"])


# --- game logic on synthetic RAM ----------------------------------------------------------------------


def ram() -> bytearray:
    return bytearray(0x10000)


def test_ram_addresses_are_the_verified_ones():
    # Pinned to the public sources cited in rtcore/envs/{tetris,pokemon}.py: a change here needs a new source.
    assert (tetris.SCORE, tetris.GAME_STATE) == (0xC0A0, 0xFFE1)  # wScoreBCD, hGameState (tetris-gb-disasm)
    assert (tetris.GS_IN_GAME_MAIN, tetris.GS_GAME_OVER_INIT, tetris.GS_LEVEL_ENDED_MAIN) == (0x00, 0x01, 0x04)
    assert (tetris.GS_TITLE_SCREEN_MAIN, tetris.GS_IN_GAME_INIT) == (0x07, 0x0A)
    assert tetris.GS_GAME_OVER_SCREEN_CLEARING == 0x0D
    assert tetris.START_SEQUENCE == ("start", "a", "a", "a")  # title, game type, music type, level select
    assert TetrisGame.titles == ("TETRIS",) and PokemonBattle.titles == ("POKEMON RED", "POKEMON BLUE")
    sym = {  # pokered.sym / pokeblue.sym
        "W_IS_IN_BATTLE": 0xD057, "W_PLAYER_MON_NUMBER": 0xCC2F, "W_BATTLE_MON_HP": 0xD015,
        "W_ENEMY_MON_HP": 0xCFE6, "W_ENEMY_MON_PARTY_POS": 0xCFE8, "W_PARTY_COUNT": 0xD163,
        "W_PARTY_MON1_HP": 0xD16C, "W_ENEMY_PARTY_COUNT": 0xD89C, "W_ENEMY_MON1_HP": 0xD8A5,
    }
    assert {k: getattr(pokemon, k) for k in sym} == sym
    assert pokemon.W_PARTY_MON1_HP + pokemon.PARTYMON_STRUCT_LENGTH == 0xD198  # wPartyMon2HP
    assert pokemon.W_ENEMY_MON1_HP + pokemon.PARTYMON_STRUCT_LENGTH == 0xD8D1  # wEnemyMon2HP
    assert (pokemon.WILD, pokemon.TRAINER, pokemon.LOST) == (1, 2, 0xFF)


def _tetris_ram(state: int = tetris.GS_IN_GAME_MAIN) -> bytearray:
    m = ram()
    m[tetris.GAME_STATE] = state
    return m


def _set_score(m: bytearray, b0: int, b1: int, b2: int) -> None:
    m[tetris.SCORE], m[tetris.SCORE + 1], m[tetris.SCORE + 2] = b0, b1, b2


def test_tetris_reward_is_the_score_change():
    m = _tetris_ram()
    game = TetrisGame()
    game.reset(m)
    assert game.step(m) == (0.0, False)
    _set_score(m, 0x40, 0x00, 0x00)  # 40 points (one line at level 0)
    assert tetris_score(m) == 40 and game.step(m) == (40.0, False)
    _set_score(m, 0x60, 0x12, 0x01)  # BCD little endian: 011260
    assert tetris_score(m) == 11260 and game.step(m) == (11220.0, False)
    m[tetris.GAME_STATE] = tetris.GS_IN_GAME_INIT  # still in play
    assert game.step(m) == (0.0, False)
    m[tetris.SCORE] = 0xAB
    with pytest.raises(ValueError, match="not a BCD byte"):
        tetris_score(m)


@pytest.mark.parametrize("state", [*tetris.GAME_OVER_STATES, tetris.GS_TITLE_SCREEN_MAIN, 0x11, 0x24])
def test_tetris_episode_ends_when_the_game_leaves_play(state):
    # Game over from its first frame (GS_GAME_OVER_INIT), through the curtain and the game-over screen; also
    # anything else that is not play (title screen after a soft reset, level select, copyright screen).
    m = _tetris_ram()
    game = TetrisGame()
    game.reset(m)
    m[tetris.GAME_STATE] = state
    assert game.step(m) == (0.0, True)


def _retitled_rom(tmp_path, title: str) -> str:
    data = bytearray(testrom.build_rom())
    data[0x134:0x144] = title.encode("ascii").ljust(16, b"\x00")
    data[0x14D] = header_checksum(data)
    path = tmp_path / f"{title.lower()}.gb"
    path.write_bytes(bytes(data))
    return str(path)


def test_tetris_options_are_checked_and_a_cartridge_without_the_title_screen_is_refused(tmp_path):
    rom = _retitled_rom(tmp_path, "TETRIS")
    with pytest.raises(ValueError, match=r"start_sequence must be button names"):
        TetrisEnv(rom, start_sequence=("start", "jump"))
    with pytest.raises(ValueError, match="menu_wait must be >= 1"):
        TetrisEnv(rom, menu_wait=0)
    with pytest.raises(RuntimeError, match="did not reach its title screen in 1200 frames"):
        TetrisEnv(rom)  # the right header title, but not the game: hGameState never reads the title screen's


def test_tetris_reset_refuses_a_start_sequence_that_does_not_start_a_game(tmp_path):
    # TetrisEnv's reset on rtcore's test cartridge retitled TETRIS (its program never touches 0xFFE1), with
    # the title screen's wait skipped: the start check reads hGameState after the sequence.
    env = TetrisEnv.__new__(TetrisEnv)
    env.max_noops, env.start_sequence, env.menu_wait = 3, tetris.START_SEQUENCE, 2
    GameBoyEnv.__init__(env, _retitled_rom(tmp_path, "TETRIS"), TetrisGame())
    try:
        env.ram[tetris.GAME_STATE] = 0x11  # left on the level-select screen (what ("start", "a", "a") did)
        env._boot_state = env._save()
        with pytest.raises(RuntimeError, match=r"did not start a game: hGameState \(0xFFE1\) is 0x11"):
            env.reset(seed=0)
        env.ram[tetris.GAME_STATE] = tetris.GS_IN_GAME_MAIN
        env._boot_state = env._save()
        env.reset(seed=0)
        assert env.step(0)[1:3] == (0.0, False)
    finally:
        env.close()


def _set_u16(m: bytearray, addr: int, v: int) -> None:
    m[addr], m[addr + 1] = v >> 8, v & 0xFF


def _battle(kind: int, own_hp: list[int], enemy_hp: list[int], own_active=0, enemy_active=0) -> bytearray:
    m = ram()
    m[pokemon.W_IS_IN_BATTLE] = kind
    m[pokemon.W_PARTY_COUNT] = len(own_hp)
    for i, hp in enumerate(own_hp):
        _set_u16(m, pokemon.W_PARTY_MON1_HP + i * pokemon.PARTYMON_STRUCT_LENGTH, hp)
    m[pokemon.W_PLAYER_MON_NUMBER] = own_active
    _set_u16(m, pokemon.W_BATTLE_MON_HP, own_hp[own_active])
    m[pokemon.W_ENEMY_PARTY_COUNT] = len(enemy_hp)
    for i, hp in enumerate(enemy_hp):
        _set_u16(m, pokemon.W_ENEMY_MON1_HP + i * pokemon.PARTYMON_STRUCT_LENGTH, hp)
    m[pokemon.W_ENEMY_MON_PARTY_POS] = enemy_active
    _set_u16(m, pokemon.W_ENEMY_MON_HP, enemy_hp[enemy_active])
    return m


def test_pokemon_trainer_battle_counts_faints_until_a_side_is_wiped_out():
    m = _battle(pokemon.TRAINER, [30, 300], [20, 25])
    game = PokemonBattle()
    game.reset(m)
    assert game.step(m) == (0.0, False)
    _set_u16(m, pokemon.W_ENEMY_MON_HP, 0)  # the active opponent faints (battle HP first)
    assert game.step(m) == (1.0, False)
    assert game.step(m) == (0.0, False)  # counted once
    _set_u16(m, pokemon.W_ENEMY_MON1_HP, 0)  # its party slot catches up: still one faint
    m[pokemon.W_ENEMY_MON_PARTY_POS] = 1
    _set_u16(m, pokemon.W_ENEMY_MON_HP, 25)  # the next one is sent out
    assert game.step(m) == (0.0, False)
    _set_u16(m, pokemon.W_BATTLE_MON_HP, 0)  # our active Pokemon (slot 0) faints
    assert game.step(m) == (-1.0, False)
    _set_u16(m, pokemon.W_ENEMY_MON_HP, 0)  # the opponent's last one faints: wiped out
    assert game.step(m) == (1.0, True)


def test_pokemon_own_wipe_out_and_wild_battles():
    m = _battle(pokemon.TRAINER, [5], [50, 50])
    game = PokemonBattle()
    game.reset(m)
    _set_u16(m, pokemon.W_BATTLE_MON_HP, 0)
    assert game.step(m) == (-1.0, True)
    w = _battle(pokemon.WILD, [40], [12])
    w[pokemon.W_ENEMY_PARTY_COUNT] = 0  # not used in wild battles
    game.reset(w)
    assert game.step(w) == (0.0, False)
    _set_u16(w, pokemon.W_ENEMY_MON_HP, 0)
    assert game.step(w) == (1.0, True)


def test_pokemon_battle_ending_otherwise_ends_the_episode():
    m = _battle(pokemon.WILD, [40], [12])
    game = PokemonBattle()
    game.reset(m)
    m[pokemon.W_IS_IN_BATTLE] = 0  # ran away / caught it
    assert game.step(m) == (0.0, True)
    m[pokemon.W_IS_IN_BATTLE] = pokemon.LOST
    assert game.step(m) == (0.0, True)


# --- real ROMs (only with $RTCORE_ROM_DIR) ------------------------------------------------------------

ROM_DIR = os.environ.get("RTCORE_ROM_DIR")
needs_roms = pytest.mark.skipif(not ROM_DIR, reason="set RTCORE_ROM_DIR to a folder holding your own Game Boy ROMs (rtcore ships none)")


def _find_rom(title: str) -> str:
    for name in sorted(os.listdir(ROM_DIR)):
        path = os.path.join(ROM_DIR, name)
        try:
            if check_rom(path, (title,))[1].title == title:
                return path
        except (ValueError, OSError):
            continue
    pytest.skip(f"no ROM titled {title!r} in $RTCORE_ROM_DIR={ROM_DIR}")


@pytest.mark.rom
@needs_roms
@pytest.mark.timeout(300)
def test_real_tetris_starts_a_game_and_ends_at_game_over():
    env = rtcore.make("gb/Tetris", rom=_find_rom("TETRIS"))
    env.reset(seed=0)
    assert not any(env.step(0)[2] for _ in range(60)), "the game must be running after reset"
    total, terminated, steps = 0.0, False, 0
    while not terminated and steps < 60_000:  # pieces stack up under the default action
        _, r, terminated, _, _ = env.step(env.default_action if steps % 2 else DOWN)
        total += r
        steps += 1
    assert terminated and total >= 0
    env.close()


def test_passes_the_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    env = rtcore.make("gb/TestRom")
    check_env(env, skip_render_check=True)  # any checker warning is an error under pytest's filterwarnings
    env.close()


@pytest.mark.rom
@needs_roms
@pytest.mark.timeout(300)
def test_real_pokemon_battle_from_a_save_state():
    rom = _find_rom("POKEMON RED")
    states = sorted(p for p in os.listdir(ROM_DIR) if p.endswith(".state"))
    if not states:
        pytest.skip("no *.state battle save state in $RTCORE_ROM_DIR (record one with `rtcore gb-record-state`)")
    env = rtcore.make("gb/PokemonRed", rom=rom, states=[os.path.join(ROM_DIR, s) for s in states])
    env.reset(seed=0)
    assert env.ram[pokemon.W_IS_IN_BATTLE] in (pokemon.WILD, pokemon.TRAINER), "the save state must be in a battle"
    rewards = []
    for t in range(20_000):
        _, r, terminated, _, _ = env.step(A if t % 8 == 0 else 0)  # mash A: pick the first move
        rewards.append(r)
        if terminated:
            break
    assert set(rewards) <= {-1.0, 0.0, 1.0} and terminated
    env.close()
