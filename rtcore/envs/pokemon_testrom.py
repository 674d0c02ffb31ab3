"""A homebrew cartridge that writes the Pokemon RAM addresses rtcore's rewards read (no game code, no
Pokemon ROM), so the Pokemon tasks can be tested end to end on the real PyBoy emulator.

The cartridge has the header title of the version it imitates ("POKEMON RED" / "POKEMON YELLOW") so
:class:`rtcore.envs.pokemon.PokemonEnv` accepts it, and is otherwise rtcore's own 32 KiB ROM-only
program, assembled with :mod:`rtcore.envs.testrom`'s assembler. At boot it sets up a wild battle
(wIsInBattle = 1) with one Pokemon on each side (100 and 50 HP), an empty box and an empty Pokedex, then
polls the joypad; each new press:

* A: the opponent's Pokemon faints (wEnemyMonHP = 0);
* B: the player's Pokemon faints (wBattleMonHP = 0);
* SELECT: a Pokemon goes to the box (wNumInBox + 1);
* RIGHT: a new species is owned (wPokedexOwned + 3, bit 4 set);
* START: the battle ends (wIsInBattle = 0).
"""

from __future__ import annotations

import os
from typing import Union

from rtcore.envs.pokemon import VERSIONS, Addresses
from rtcore.envs.testrom import ENTRY, PREV, ROM_SIZE, _assemble, _hi, _lo

__all__ = ["build_rom", "write_rom"]


def _store(addr: int, value: int) -> list:
    return [[0x3E, value & 0xFF], [0xEA, _lo(addr), _hi(addr)]]  # ld a, value; ld [addr], a


def _program(a: Addresses) -> list:
    JR, JR_Z = 0x18, 0x28
    init = [[0xF3], [0x31, 0xFE, 0xFF]]  # di; ld sp, $FFFE
    for addr, v in ((PREV, 0), (a.is_in_battle, 1), (a.party_count, 1), (a.player_mon_number, 0), (a.num_in_box, 0),
                    (a.party_mon1_hp, 0), (a.party_mon1_hp + 1, 100), (a.battle_mon_hp, 0), (a.battle_mon_hp + 1, 100),
                    (a.enemy_mon_hp, 0), (a.enemy_mon_hp + 1, 50), (a.enemy_party_count, 0)):
        init += _store(addr, v)
    for i in range(19):
        init += _store(a.pokedex_owned + i, 0)
    poll = [
        ("label", "loop"),
        [0x3E, 0x10], [0xE0, 0x00], [0xF0, 0x00], [0xF0, 0x00], [0x2F], [0xE6, 0x0F], [0x47],  # b = A B Select Start
        [0x3E, 0x20], [0xE0, 0x00], [0xF0, 0x00], [0xF0, 0x00], [0x2F], [0xE6, 0x0F], [0xCB, 0x37], [0xB0], [0x47],
        [0xFA, _lo(PREV), _hi(PREV)], [0x2F], [0xA0], [0x4F],  # c = newly pressed
        [0x78], [0xEA, _lo(PREV), _hi(PREV)],
    ]
    acts = []
    for bit, name, body in (
        (0, "a", _store(a.enemy_mon_hp, 0) + _store(a.enemy_mon_hp + 1, 0)),
        (1, "b", _store(a.battle_mon_hp, 0) + _store(a.battle_mon_hp + 1, 0)),
        (2, "select", [[0x21, _lo(a.num_in_box), _hi(a.num_in_box)], [0x34]]),  # ld hl, box; inc [hl]
        (4, "right", _store(a.pokedex_owned + 3, 0x10)),
        (3, "start", _store(a.is_in_battle, 0)),
    ):
        acts += [[0xCB, 0x40 | (bit << 3) | 0x01], ("jr", JR_Z, f"no_{name}")] + body + [("label", f"no_{name}")]
    return init + poll + acts + [("jr", JR, "loop")]


def build_rom(version: str = "red") -> bytes:
    """The 32 KiB homebrew cartridge imitating ``version``'s RAM layout and header title."""
    from rtcore.envs.gameboy import header_checksum

    if version not in VERSIONS:
        raise ValueError(f"version must be one of {tuple(VERSIONS)}, got {version!r}")
    a = VERSIONS[version]
    rom = bytearray(ROM_SIZE)
    rom[0x100:0x104] = bytes([0x00, 0xC3, _lo(ENTRY), _hi(ENTRY)])
    title = f"POKEMON {version.upper()}".encode("ascii")
    rom[0x134 : 0x134 + len(title)] = title
    rom[0x14A] = 0x01
    code = _assemble(_program(a), ENTRY)
    rom[ENTRY : ENTRY + len(code)] = code
    rom[0x14D] = header_checksum(rom)
    gsum = (sum(rom) - rom[0x14E] - rom[0x14F]) & 0xFFFF
    rom[0x14E], rom[0x14F] = gsum >> 8, gsum & 0xFF
    return bytes(rom)


def write_rom(path: Union[str, "os.PathLike[str]"], version: str = "red") -> str:
    """Write the cartridge for ``version`` to ``path``; returns the path."""
    path = os.fspath(path)
    with open(path, "wb") as f:
        f.write(build_rom(version))
    return path
