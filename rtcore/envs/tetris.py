"""Tetris (Game Boy): reward = change in score, episode ends at game over; reset as in the paper.

RAM addresses (Data Crystal, "Tetris (Game Boy)/RAM map", datacrystal.tcrf.net/wiki/Tetris_(Game_Boy)/RAM_map;
the same as in h3nnn4n's "Reverse Engineering the GameBoy Tetris"), one per constant below.
"""

from __future__ import annotations

from typing import Any, Sequence

from rtcore.envs.gameboy import GameBoyEnv, PathLike, Ram, RamGame

# Score: 3 bytes, binary-coded decimal, little endian (C0A0 = lowest two digits). Data Crystal RAM map.
SCORE = 0xC0A0
# hGameState (Data Crystal: "game status"): 0x0D while the game-over curtain falls, 0x04 on the game-over
# screen that follows (the values gymboy and PyBoy-based agents test for).
GAME_STATE = 0xFFE1
GAME_OVER_STATES = (0x04, 0x0D)
# The title screen shows "1PLAYER" with these tile ids in background row 14, columns 2..8: PyBoy's own
# Tetris wrapper (pyboy/plugins/game_wrapper_tetris.py, start_game) waits for it before pressing START.
TITLE_ROW, TITLE_COLS, TITLE_TILES = 14, (2, 9), [89, 25, 21, 10, 34, 14, 27]


def bcd(value: int) -> int:
    """One BCD byte as an int (0x42 -> 42); ValueError on a nibble above 9."""
    hi, lo = value >> 4, value & 0xF
    if hi > 9 or lo > 9:
        raise ValueError(f"0x{value:02X} is not a BCD byte")
    return hi * 10 + lo


def tetris_score(ram: Ram) -> int:
    """The score shown on screen: 6 BCD digits at SCORE, little endian."""
    return bcd(ram[SCORE]) + 100 * bcd(ram[SCORE + 1]) + 10_000 * bcd(ram[SCORE + 2])


def tetris_game_over(ram: Ram) -> bool:
    return ram[GAME_STATE] in GAME_OVER_STATES


class TetrisGame(RamGame):
    """Reward = score gained this frame; terminated at game over."""

    titles = ("TETRIS",)

    def __init__(self) -> None:
        self.score = 0

    def reset(self, ram: Ram) -> None:
        self.score = tetris_score(ram)

    def step(self, ram: Ram) -> tuple[float, bool]:
        score = tetris_score(ram)
        reward, self.score = score - self.score, score
        return float(reward), tetris_game_over(ram)


class TetrisEnv(GameBoyEnv):
    """``gb/Tetris``: the paper's Tetris. Each reset returns to the title screen, waits a random 0-40
    no-op frames (so episodes differ: the piece sequence follows the frame count), then presses START
    and A through the menus (``start_sequence``), each press followed by ``menu_wait`` frames.
    """

    env_id = "gb/Tetris"

    def __init__(
        self,
        rom: PathLike | None = None,
        *,
        max_noops: int = 40,
        start_sequence: Sequence[str] = ("start", "a", "a"),
        menu_wait: int = 8,
        **kwargs: Any,
    ) -> None:
        if max_noops < 0:
            raise ValueError(f"max_noops must be >= 0, got {max_noops}")
        self.max_noops = int(max_noops)
        self.start_sequence = tuple(start_sequence)
        self.menu_wait = int(menu_wait)
        super().__init__(rom, TetrisGame(), **kwargs)
        # Run to the title screen once; every reset starts from here.
        for _ in range(1200):
            if self._pb.tilemap_background[TITLE_COLS[0] : TITLE_COLS[1], TITLE_ROW] == TITLE_TILES:
                break
            self._pb.tick(1, False)
        else:
            self.close()
            raise RuntimeError(f"Tetris ROM {self.rom_path!r} did not reach its title screen in 1200 frames")
        self._boot_state = self._save()

    def start_episode(self) -> None:
        self.tick(int(self.np_random.integers(0, self.max_noops + 1)), render=False)
        for button in self.start_sequence:
            self.press(button)
            self.tick(self.menu_wait, render=False)
