"""Pokemon Red/Blue/Yellow: the authors' two tasks (CERC-AAI/realtime_rl, custom_integrations/Pokemon*_Battles
and Pokemon*_Catching), with rewards read from RAM.

* Battle (:class:`PokemonBattle`): +1 when an opponent's Pokemon faints, -1 when one of yours does; the
  episode ends when either side is wiped out (or the battle ends another way: run, catch).
* Catching (:class:`PokemonCatch`), the authors' ``script.lua`` ``caught()`` / ``done_check()``: +1, once
  per episode, when a Pokemon is caught, seen as wNumInBox rising by exactly one (the catch went to the
  box) or any byte of the wPokedexOwned flags changing (a new species); -1 when the battle ends without a
  catch (wIsInBattle falls: ran away, fainted); the episode ends when wIsInBattle is 0. As in their
  definition, catching an already-owned species into a party with room is not seen (neither counter moves).

Yellow's work RAM is Red/Blue's shifted down by one byte from wEnemyMon on (wPlayerMonNumber is not),
per [sym] pokeyellow.sym, and its header title is "POKEMON YELLOW" (pret/pokeyellow Makefile, ``rgbfix -t``);
the authors' PokemonYellow data.json agrees on every address it lists (wIsInBattle 0xD056, party count
0xD162, party HP 0xD16B, enemy party HP 0xD8A4, wNumInBox 0xDA7F, wPokedexOwned 0xD2F6).

Episodes start from save states the user supplies (recorded in a battle, e.g. with
``rtcore gb-record-state``), one sampled per episode.

Every address below was checked against the symbol files built from the pret/pokered disassembly,
[sym] = pokemon-speedrunning/symfiles pokered.sym and pokeblue.sym (Red and Blue share all of these
addresses), with meanings from [wram] = pret/pokered ram/wram.asm. HP is 2 bytes, high byte first: the
game's damage routine (pret/pokered engine/battle/core.asm) subtracts from wBattleMonHP + 1 first, then with
borrow from wBattleMonHP, and [PyBoy] = Baekalfen/PyBoy pyboy/plugins/game_wrapper_pokemon_gen1.py reads party
HP as (mem[a] << 8) | mem[a + 1]; only "is it 0" matters here. The cartridge header titles
are "POKEMON RED" and "POKEMON BLUE" (pret/pokered Makefile, ``rgbfix -t``; [PyBoy] ``enabled()``).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence, Union

from rtcore.envs.gameboy import GameBoyEnv, PathLike, Ram, RamGame

# [sym] 00:d057; [wram] "lost battle, this is -1 / no battle 0 / wild battle 1 / trainer battle 2"
W_IS_IN_BATTLE = 0xD057
# [sym] 00:cc2f; [wram] "index in party of currently battling mon"
W_PLAYER_MON_NUMBER = 0xCC2F
# [sym] 00:d015 (wBattleMon = 00:d014, species first): the player's Pokemon in battle, 2 bytes
W_BATTLE_MON_HP = 0xD015
# [sym] 00:cfe6 (wEnemyMon = 00:cfe5, species first): the opponent's Pokemon in battle, 2 bytes
W_ENEMY_MON_HP = 0xCFE6
# [sym] 00:cfe8, shared with wEnemyMonBoxLevel ([wram]: a union in the battle struct); $FF until the
# first enemy Pokemon is sent out
W_ENEMY_MON_PARTY_POS = 0xCFE8
# [sym] 00:d163; [PyBoy] constants PARTY_COUNT_ADDRESS = 0xD163
W_PARTY_COUNT = 0xD163
# [sym] 00:d16c (wPartyMon1 = 00:d16b, species first; wPartyMon2HP = 00:d198); [PyBoy] party HP at
# PARTY_MONS_ADDRESS (0xD16B) + 1
W_PARTY_MON1_HP = 0xD16C
# [sym] 00:d89c (trainer battles)
W_ENEMY_PARTY_COUNT = 0xD89C
# [sym] 00:d8a5 (wEnemyMon1 = 00:d8a4; wEnemyMon2HP = 00:d8d1): the enemy party uses the same struct
W_ENEMY_MON1_HP = 0xD8A5
# [sym] wPartyMon2 - wPartyMon1 = 0xd197 - 0xd16b = wEnemyMon2 - wEnemyMon1 = 0xd8d0 - 0xd8a4 = 0x2C;
# [PyBoy] PARTY_MON_SIZE = 0x2C
PARTYMON_STRUCT_LENGTH = 0x2C
PARTY_LENGTH = 6  # [PyBoy] PARTY_LENGTH = 6
WILD, TRAINER, LOST = 1, 2, 0xFF  # [wram] wIsInBattle values (-1 as a byte is 0xFF)
# [sym] 00:da80 wNumInBox: Pokemon in the current box (a catch with a full party goes there)
W_NUM_IN_BOX = 0xDA80
# [sym] 00:d2f7 wPokedexOwned .. 00:d30a wPokedexOwnedEnd: one bit per species owned (19 bytes)
W_POKEDEX_OWNED, POKEDEX_OWNED_BYTES = 0xD2F7, 0xD30A - 0xD2F7


class Addresses(NamedTuple):
    """The work-RAM addresses the rewards read, for one game version."""

    titles: tuple[str, ...]
    is_in_battle: int
    player_mon_number: int
    battle_mon_hp: int
    enemy_mon_hp: int
    enemy_mon_party_pos: int
    party_count: int
    party_mon1_hp: int
    enemy_party_count: int
    enemy_mon1_hp: int
    num_in_box: int
    pokedex_owned: int


RED_BLUE = Addresses(("POKEMON RED", "POKEMON BLUE"), W_IS_IN_BATTLE, W_PLAYER_MON_NUMBER, W_BATTLE_MON_HP, W_ENEMY_MON_HP,
                     W_ENEMY_MON_PARTY_POS, W_PARTY_COUNT, W_PARTY_MON1_HP, W_ENEMY_PARTY_COUNT, W_ENEMY_MON1_HP,
                     W_NUM_IN_BOX, W_POKEDEX_OWNED)
# [sym] pokeyellow.sym: 00:cc2f wPlayerMonNumber, 00:cfe5 wEnemyMonHP, 00:cfe7 wEnemyMonPartyPos, 01:d014 wBattleMonHP,
# 01:d056 wIsInBattle, 01:d162 wPartyCount, 01:d16b wPartyMon1HP, 01:d89b wEnemyPartyCount, 01:d8a4 wEnemyMon1HP,
# 01:da7f wNumInBox, 01:d2f6 wPokedexOwned (struct sizes as Red/Blue: wPartyMon2 - wPartyMon1 = 0xd196 - 0xd16a = 0x2C)
YELLOW = Addresses(("POKEMON YELLOW",), 0xD056, 0xCC2F, 0xD014, 0xCFE5, 0xCFE7, 0xD162, 0xD16B, 0xD89B, 0xD8A4, 0xDA7F, 0xD2F6)
VERSIONS = {"red": RED_BLUE, "blue": RED_BLUE, "yellow": YELLOW}
TASKS = ("battle", "catch")


def _u16(ram: Ram, address: int) -> int:
    return (ram[address] << 8) | ram[address + 1]


def own_fainted(ram: Ram, a: Addresses = RED_BLUE) -> frozenset[int]:
    """Party indices of the player's fainted Pokemon (HP 0; the one in battle by its battle HP)."""
    count = min(ram[a.party_count], PARTY_LENGTH)
    active = ram[a.player_mon_number]
    out = set()
    for i in range(count):
        hp = _u16(ram, a.battle_mon_hp) if i == active else _u16(ram, a.party_mon1_hp + i * PARTYMON_STRUCT_LENGTH)
        if hp == 0:
            out.add(i)
    return frozenset(out)


def enemy_fainted(ram: Ram, a: Addresses = RED_BLUE) -> tuple[frozenset[int], int]:
    """(indices of the opponent's fainted Pokemon, opponent party size). A wild battle is a party of one."""
    active_hp = _u16(ram, a.enemy_mon_hp)
    if ram[a.is_in_battle] != TRAINER:
        return (frozenset({0}) if active_hp == 0 else frozenset()), 1
    count = min(ram[a.enemy_party_count], PARTY_LENGTH)
    active = ram[a.enemy_mon_party_pos]
    out = set()
    for i in range(count):
        hp = active_hp if i == active else _u16(ram, a.enemy_mon1_hp + i * PARTYMON_STRUCT_LENGTH)
        if hp == 0:
            out.add(i)
    return frozenset(out), count


class PokemonBattle(RamGame):
    """Counts faints on both sides; a Pokemon counts once per episode (fainting cannot be undone in battle).

    ``step`` returns (+1 per newly fainted opponent - 1 per newly fainted own Pokemon, terminated), where
    terminated means one side has no Pokemon left standing, or the battle is over (wIsInBattle back to 0
    after the episode started in battle, or 0xFF: lost).
    """

    titles = RED_BLUE.titles

    def __init__(self, addresses: Addresses = RED_BLUE) -> None:
        self.a = addresses
        self.titles = addresses.titles
        self.own: frozenset[int] = frozenset()
        self.enemy: frozenset[int] = frozenset()
        self.started_in_battle = False

    def reset(self, ram: Ram) -> None:
        self.own = own_fainted(ram, self.a)
        self.enemy, _ = enemy_fainted(ram, self.a)
        self.started_in_battle = ram[self.a.is_in_battle] in (WILD, TRAINER)

    def step(self, ram: Ram) -> tuple[float, bool]:
        in_battle = ram[self.a.is_in_battle]
        if in_battle not in (WILD, TRAINER):
            # Out of battle the battle structs are stale: no reward, the episode ends if it was a battle.
            return 0.0, self.started_in_battle or in_battle == LOST
        own = own_fainted(ram, self.a)
        enemy, enemy_count = enemy_fainted(ram, self.a)
        reward = len(enemy - self.enemy) - len(own - self.own)
        self.own |= own
        self.enemy |= enemy
        party = min(ram[self.a.party_count], PARTY_LENGTH)
        wiped = (party > 0 and len(self.own) >= party) or (enemy_count > 0 and len(self.enemy) >= enemy_count)
        return float(reward), wiped


class PokemonCatch(RamGame):
    """The authors' catching task: +1 once per episode for a catch, -1 if the battle ends without one;
    terminated when wIsInBattle is 0 (see the module docstring)."""

    titles = RED_BLUE.titles

    def __init__(self, addresses: Addresses = RED_BLUE) -> None:
        self.a = addresses
        self.titles = addresses.titles
        self.caught = False
        self.box = 0
        self.owned = b""
        self.in_battle = 0

    def _owned(self, ram: Ram) -> bytes:
        return bytes(ram[self.a.pokedex_owned + i] for i in range(POKEDEX_OWNED_BYTES))

    def _in_battle(self, ram: Ram) -> int:
        v = ram[self.a.is_in_battle]
        return v - 256 if v >= 128 else v  # signed, as the authors' data.json reads it ("|i1"): lost is -1

    def reset(self, ram: Ram) -> None:
        self.caught = False
        self.box, self.owned, self.in_battle = ram[self.a.num_in_box], self._owned(ram), self._in_battle(ram)

    def step(self, ram: Ram) -> tuple[float, bool]:
        box, owned, in_battle = ram[self.a.num_in_box], self._owned(ram), self._in_battle(ram)
        reward = 0.0
        if (box - self.box == 1 or owned != self.owned) and not self.caught:
            self.caught, reward = True, 1.0
        elif in_battle < self.in_battle:  # the battle ended: ran, caught (already rewarded), lost (-1)
            reward = 0.0 if self.caught else -1.0
        self.box, self.owned, self.in_battle = box, owned, in_battle
        return reward, in_battle == 0


class PokemonEnv(GameBoyEnv):
    """``gb/Pokemon{Red,Blue,Yellow}`` (battles) and ``gb/Pokemon{Red,Blue,Yellow}-Catch`` (catching), from
    user-supplied save states (``states=``) in a battle."""

    def __init__(
        self,
        rom: PathLike | None = None,
        *,
        states: Sequence[Union[PathLike, bytes]] | None = None,
        version: str = "red",
        task: str = "battle",
        **kwargs: Any,
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be 'red', 'blue' or 'yellow', got {version!r}")
        if task not in TASKS:
            raise ValueError(f"task must be 'battle' or 'catch', got {task!r}")
        self.env_id = f"gb/Pokemon{version.capitalize()}" + ("-Catch" if task == "catch" else "")
        if not states:
            raise ValueError(
                f"{self.env_id} needs states=[<save state in a battle>, ...]; record one with "
                "`rtcore gb-record-state ROM OUT --script ...`"
            )
        kwargs.setdefault("titles", (f"POKEMON {version.upper()}",))
        game = PokemonBattle(VERSIONS[version]) if task == "battle" else PokemonCatch(VERSIONS[version])
        super().__init__(rom, game, states=states, **kwargs)
