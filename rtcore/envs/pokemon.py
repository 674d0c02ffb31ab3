"""Pokemon Red/Blue battles: +1 when an opponent's Pokemon faints, -1 when one of yours does; the episode
ends when either side is wiped out (or the battle ends another way: run, catch).

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

from typing import Any, Sequence, Union

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


def _u16(ram: Ram, address: int) -> int:
    return (ram[address] << 8) | ram[address + 1]


def own_fainted(ram: Ram) -> frozenset[int]:
    """Party indices of the player's fainted Pokemon (HP 0; the one in battle by its battle HP)."""
    count = min(ram[W_PARTY_COUNT], PARTY_LENGTH)
    active = ram[W_PLAYER_MON_NUMBER]
    out = set()
    for i in range(count):
        hp = _u16(ram, W_BATTLE_MON_HP) if i == active else _u16(ram, W_PARTY_MON1_HP + i * PARTYMON_STRUCT_LENGTH)
        if hp == 0:
            out.add(i)
    return frozenset(out)


def enemy_fainted(ram: Ram) -> tuple[frozenset[int], int]:
    """(indices of the opponent's fainted Pokemon, opponent party size). A wild battle is a party of one."""
    active_hp = _u16(ram, W_ENEMY_MON_HP)
    if ram[W_IS_IN_BATTLE] != TRAINER:
        return (frozenset({0}) if active_hp == 0 else frozenset()), 1
    count = min(ram[W_ENEMY_PARTY_COUNT], PARTY_LENGTH)
    active = ram[W_ENEMY_MON_PARTY_POS]
    out = set()
    for i in range(count):
        hp = active_hp if i == active else _u16(ram, W_ENEMY_MON1_HP + i * PARTYMON_STRUCT_LENGTH)
        if hp == 0:
            out.add(i)
    return frozenset(out), count


class PokemonBattle(RamGame):
    """Counts faints on both sides; a Pokemon counts once per episode (fainting cannot be undone in battle).

    ``step`` returns (+1 per newly fainted opponent - 1 per newly fainted own Pokemon, terminated), where
    terminated means one side has no Pokemon left standing, or the battle is over (wIsInBattle back to 0
    after the episode started in battle, or 0xFF: lost).
    """

    titles = ("POKEMON RED", "POKEMON BLUE")

    def __init__(self) -> None:
        self.own: frozenset[int] = frozenset()
        self.enemy: frozenset[int] = frozenset()
        self.started_in_battle = False

    def reset(self, ram: Ram) -> None:
        self.own = own_fainted(ram)
        self.enemy, _ = enemy_fainted(ram)
        self.started_in_battle = ram[W_IS_IN_BATTLE] in (WILD, TRAINER)

    def step(self, ram: Ram) -> tuple[float, bool]:
        in_battle = ram[W_IS_IN_BATTLE]
        if in_battle not in (WILD, TRAINER):
            # Out of battle the battle structs are stale: no reward, the episode ends if it was a battle.
            return 0.0, self.started_in_battle or in_battle == LOST
        own = own_fainted(ram)
        enemy, enemy_count = enemy_fainted(ram)
        reward = len(enemy - self.enemy) - len(own - self.own)
        self.own |= own
        self.enemy |= enemy
        party = min(ram[W_PARTY_COUNT], PARTY_LENGTH)
        wiped = (party > 0 and len(self.own) >= party) or (enemy_count > 0 and len(self.enemy) >= enemy_count)
        return float(reward), wiped


class PokemonEnv(GameBoyEnv):
    """``gb/PokemonRed`` / ``gb/PokemonBlue``: battles from user-supplied save states (``states=``)."""

    def __init__(
        self,
        rom: PathLike | None = None,
        *,
        states: Sequence[Union[PathLike, bytes]] | None = None,
        version: str = "red",
        **kwargs: Any,
    ) -> None:
        if version not in ("red", "blue"):
            raise ValueError(f"version must be 'red' or 'blue', got {version!r}")
        self.env_id = f"gb/Pokemon{version.capitalize()}"
        if not states:
            raise ValueError(
                f"{self.env_id} needs states=[<save state in a battle>, ...]; record one with "
                "`rtcore gb-record-state ROM OUT --script ...`"
            )
        kwargs.setdefault("titles", (f"POKEMON {version.upper()}",))
        super().__init__(rom, PokemonBattle(), states=states, **kwargs)
