"""Pokemon Red/Blue battles: +1 when an opponent's Pokemon faints, -1 when one of yours does; the episode
ends when either side is wiped out (or the battle ends another way: run, catch).

Episodes start from save states the user supplies (recorded in a battle, e.g. with
``rtcore gb-record-state``), one sampled per episode. RAM addresses are the English Red/Blue WRAM symbols
of the pret/pokered disassembly (ram/wram.asm; addresses as in pokered.sym and Data Crystal's
"Pokemon Red/Blue: RAM map"), one per constant below.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

from rtcore.envs.gameboy import GameBoyEnv, PathLike, Ram, RamGame

W_IS_IN_BATTLE = 0xD057  # wIsInBattle: 0 none, 1 wild, 2 trainer, 0xFF lost
W_PLAYER_MON_NUMBER = 0xCC2F  # wPlayerMonNumber: party index of the Pokemon in battle
W_BATTLE_MON_HP = 0xD015  # wBattleMonHP: HP of the player's Pokemon in battle (2 bytes, big endian)
W_ENEMY_MON_HP = 0xCFE6  # wEnemyMonHP: HP of the enemy Pokemon in battle (2 bytes, big endian)
W_ENEMY_MON_PARTY_POS = 0xCFE8  # wEnemyMonPartyPos: enemy party index of the Pokemon in battle
W_PARTY_COUNT = 0xD163  # wPartyCount
W_PARTY_MON1_HP = 0xD16C  # wPartyMon1HP (2 bytes, big endian); wPartyMon2HP = + PARTYMON_STRUCT_LENGTH
W_ENEMY_PARTY_COUNT = 0xD89C  # wEnemyPartyCount (trainer battles)
W_ENEMY_MON1_HP = 0xD8A5  # wEnemyMon1HP (2 bytes, big endian); the enemy party uses the same struct
PARTYMON_STRUCT_LENGTH = 0x2C  # constants/pokemon_data_constants.asm
PARTY_LENGTH = 6
WILD, TRAINER, LOST = 1, 2, 0xFF


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
