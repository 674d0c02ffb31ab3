"""rtcore's own tiny Game Boy cartridge, assembled here byte by byte (no toolchain, no game ROM).

A 32 KiB ROM-only cartridge (type 0x00) titled ``RTCORETEST`` with a valid header checksum. Its program
polls the joypad in a loop and keeps a score in work RAM, so a test can drive the real PyBoy emulator
through :class:`rtcore.envs.GameBoyEnv` and check rewards for scripted inputs:

* each new press of A adds 1 to the score byte at ``SCORE`` (0xC000), each new press of B subtracts 1;
  a press counts once however long the button is held (edge-triggered);
* a new press of RIGHT adds 16 (so the direction keys are exercised too);
* a new press of START sets the game-over byte at ``DONE`` (0xC002) to 1;
* the background palette register BGP (0xFF47) is set to the score each pass, so the screen's shade
  (colour 0 of the blank tiles) follows ``score & 3``: the observation changes with the score.

:func:`build_rom` returns the bytes; :func:`write_rom` writes them to a path. The logo area is left
zero: PyBoy's built-in boot ROM does not verify it (a real DMG would lock up), and rtcore's header
check relies on the header checksum, not the logo.
"""

from __future__ import annotations

import os
from typing import Union

TITLE = "RTCORETEST"
SCORE = 0xC000  # WRAM bank 0: score byte (mod 256)
PREV = 0xC001  # WRAM: buttons held at the previous poll (bit set = held): for edge detection
DONE = 0xC002  # WRAM: 1 after START was pressed
ROM_SIZE = 32 * 1024
ENTRY = 0x150


def _assemble(program: list, origin: int) -> bytes:
    """Two passes over ``program``: bytes, ``("label", name)`` and ``("jr", opcode, name)``."""
    labels: dict[str, int] = {}
    pc = origin
    for item in program:
        if isinstance(item, tuple) and item[0] == "label":
            labels[item[1]] = pc
        elif isinstance(item, tuple) and item[0] == "jr":
            pc += 2
        else:
            pc += len(item)
    out = bytearray()
    for item in program:
        if isinstance(item, tuple) and item[0] == "label":
            continue
        if isinstance(item, tuple) and item[0] == "jr":
            _, opcode, name = item
            offset = labels[name] - (origin + len(out) + 2)
            if not -128 <= offset <= 127:
                raise ValueError(f"jr to {name} out of range ({offset})")
            out += bytes([opcode, offset & 0xFF])
        else:
            out += bytes(item)
    return bytes(out)


def _lo(a: int) -> int:
    return a & 0xFF


def _hi(a: int) -> int:
    return a >> 8


def _program() -> list:
    JR, JR_Z = 0x18, 0x28
    return [
        [0xF3],  # di
        [0x31, 0xFE, 0xFF],  # ld sp, $FFFE
        [0xAF],  # xor a
        [0xEA, _lo(SCORE), _hi(SCORE)],  # ld [SCORE], a
        [0xEA, _lo(PREV), _hi(PREV)],  # ld [PREV], a
        [0xEA, _lo(DONE), _hi(DONE)],  # ld [DONE], a
        ("label", "loop"),
        # Action buttons: select P15 (bit 5 low); low nibble = Start, Select, B, A (0 = pressed).
        [0x3E, 0x10],  # ld a, $10
        [0xE0, 0x00],  # ldh [$FF00], a
        [0xF0, 0x00],  # ldh a, [$FF00]
        [0xF0, 0x00],  # ldh a, [$FF00]  (read twice to let the lines settle)
        [0x2F],  # cpl
        [0xE6, 0x0F],  # and $0F
        [0x47],  # ld b, a          b = A:1 B:2 Select:4 Start:8
        # Direction keys: select P14 (bit 4 low); low nibble = Down, Up, Left, Right.
        [0x3E, 0x20],  # ld a, $20
        [0xE0, 0x00],  # ldh [$FF00], a
        [0xF0, 0x00],  # ldh a, [$FF00]
        [0xF0, 0x00],  # ldh a, [$FF00]
        [0x2F],  # cpl
        [0xE6, 0x0F],  # and $0F
        [0xCB, 0x37],  # swap a          directions in the high nibble: Right:$10 Left:$20 Up:$40 Down:$80
        [0xB0],  # or b
        [0x47],  # ld b, a          b = all 8 buttons held now
        [0xFA, _lo(PREV), _hi(PREV)],  # ld a, [PREV]
        [0x2F],  # cpl
        [0xA0],  # and b
        [0x4F],  # ld c, a          c = newly pressed = held now and not before
        [0x78],  # ld a, b
        [0xEA, _lo(PREV), _hi(PREV)],  # ld [PREV], a
        [0x21, _lo(SCORE), _hi(SCORE)],  # ld hl, SCORE
        [0xCB, 0x41],  # bit 0, c   (A)
        ("jr", JR_Z, "no_a"),
        [0x34],  # inc [hl]
        ("label", "no_a"),
        [0xCB, 0x49],  # bit 1, c   (B)
        ("jr", JR_Z, "no_b"),
        [0x35],  # dec [hl]
        ("label", "no_b"),
        [0xCB, 0x61],  # bit 4, c   (Right)
        ("jr", JR_Z, "no_right"),
        [0x7E],  # ld a, [hl]
        [0xC6, 0x10],  # add a, 16
        [0x77],  # ld [hl], a
        ("label", "no_right"),
        [0xCB, 0x59],  # bit 3, c   (Start)
        ("jr", JR_Z, "no_start"),
        [0x3E, 0x01],  # ld a, 1
        [0xEA, _lo(DONE), _hi(DONE)],  # ld [DONE], a
        ("label", "no_start"),
        [0x7E],  # ld a, [hl]
        [0xE0, 0x47],  # ldh [$FF47], a   BGP = score
        ("jr", JR, "loop"),
    ]


def build_rom() -> bytes:
    """The 32 KiB test cartridge."""
    from rtcore.envs.gameboy import header_checksum

    rom = bytearray(ROM_SIZE)
    rom[0x100:0x104] = bytes([0x00, 0xC3, _lo(ENTRY), _hi(ENTRY)])  # nop; jp $0150
    title = TITLE.encode("ascii")
    rom[0x134 : 0x134 + len(title)] = title
    rom[0x147] = 0x00  # cartridge type: ROM only
    rom[0x148] = 0x00  # ROM size: 32 KiB, no banking
    rom[0x149] = 0x00  # no cartridge RAM
    rom[0x14A] = 0x01  # destination: non-Japanese
    code = _assemble(_program(), ENTRY)
    rom[ENTRY : ENTRY + len(code)] = code
    rom[0x14D] = header_checksum(rom)
    gsum = (sum(rom) - rom[0x14E] - rom[0x14F]) & 0xFFFF  # global checksum (not checked by hardware)
    rom[0x14E], rom[0x14F] = gsum >> 8, gsum & 0xFF
    return bytes(rom)


def write_rom(path: Union[str, "os.PathLike[str]"]) -> str:
    """Write the test cartridge to ``path`` and return the path as a string."""
    path = os.fspath(path)
    with open(path, "wb") as f:
        f.write(build_rom())
    return path


def _ram_game():  # imported lazily: gameboy.py pulls in gymnasium
    from rtcore.envs.gameboy import RamGame

    class TestRomGame(RamGame):
        """Reward = change in the test cartridge's score byte (signed, mod 256); terminated after START."""

        titles = (TITLE,)

        def __init__(self) -> None:
            self.score = 0

        def reset(self, ram) -> None:
            self.score = ram[SCORE]

        def step(self, ram) -> tuple[float, bool]:
            score = ram[SCORE]
            delta = ((score - self.score + 128) & 0xFF) - 128
            self.score = score
            return float(delta), ram[DONE] == 1

    return TestRomGame


def make_test_env(rom=None, **kwargs):
    """``gb/TestRom``: :class:`rtcore.envs.GameBoyEnv` on the test cartridge (written to a temporary
    file if ``rom`` is None), with its score as reward and START as game over. Needs no game ROM, so
    tests, CI and benchmarks can run the real PyBoy env anywhere."""
    import tempfile

    from rtcore.envs.gameboy import GameBoyEnv

    if rom is None:
        fd, rom = tempfile.mkstemp(prefix="rtcore-testrom-", suffix=".gb")
        os.close(fd)
        try:
            write_rom(rom)
            env = GameBoyEnv(rom, _ram_game()(), **kwargs)
        finally:
            os.unlink(rom)  # PyBoy has read the ROM into memory
        env.env_id = "gb/TestRom"
        return env
    env = GameBoyEnv(rom, _ram_game()(), **kwargs)
    env.env_id = "gb/TestRom"
    return env
