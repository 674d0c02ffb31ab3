"""Tetris (Game Boy): reward = change in score, episode ends when the game leaves play; reset as in the paper.

Every RAM address and value below was checked against public sources, cited next to it:
[disasm] = the vinheim3/tetris-gb-disasm disassembly (disasm/include/wram.s, hram.s, constants.s and
disasm/code/*.s), [DC] = Data Crystal's "Tetris (Game Boy)/RAM map", [PyBoy] = Baekalfen/PyBoy's
pyboy/plugins/game_wrapper_tetris.py. The cartridge header title is "TETRIS" followed by zero bytes
([disasm] disasm/code/bank_000.s, HeaderTitle at $0134; [PyBoy] cartridge_title = "TETRIS").
"""

from __future__ import annotations

from typing import Any, Sequence

from rtcore.envs.gameboy import ALL_BUTTONS, GameBoyEnv, PathLike, Ram, RamGame

# wScoreBCD: 3 bytes of binary-coded decimal, little endian (C0A0 holds the lowest two digits).
# [disasm] disasm/include/wram.s "wScoreBCD:: ; $c0a0  ds 3"; [DC] "C0A0 score_bcd".
SCORE = 0xC0A0
# hGameState: which state handler the main loop runs. [disasm] disasm/include/hram.s "hGameState:: ; $ffe1";
# values from disasm/include/constants.s (GS_*).
GAME_STATE = 0xFFE1
GS_IN_GAME_MAIN = 0x00  # a game is being played (pausing does not change it: hGamePaused is a separate flag)
GS_GAME_OVER_INIT = 0x01  # set the frame the stack tops out (disasm/code/inGameFlow.s, $211a)
GS_LEVEL_ENDED_MAIN = 0x04  # the "GAME OVER / PLEASE TRY AGAIN" screen, waiting for A or START
GS_TITLE_SCREEN_MAIN = 0x07  # the title screen, reading START (disasm/code/introScreens.s, GameState07)
GS_IN_GAME_INIT = 0x0A  # the frame(s) that set up a new game, then GS_IN_GAME_MAIN
GS_GAME_OVER_SCREEN_CLEARING = 0x0D  # the curtain of blocks after GS_GAME_OVER_INIT
#: A one-player A-type game over runs GS_GAME_OVER_INIT -> GS_GAME_OVER_SCREEN_CLEARING -> GS_LEVEL_ENDED_MAIN
#: (or the rocket scenes above 100,000 points) ([disasm] disasm/code/bank_000.s, GameState01 and GameState0d).
GAME_OVER_STATES = (GS_GAME_OVER_INIT, GS_GAME_OVER_SCREEN_CLEARING, GS_LEVEL_ENDED_MAIN)
#: The only states of a game in play: anything else (game over, a soft reset, a menu) ends the episode.
IN_PLAY_STATES = (GS_IN_GAME_MAIN, GS_IN_GAME_INIT)
# The title screen shows "1PLAYER" with these tile ids in background row 14, columns 2..8: [PyBoy] start_game
# waits for them before pressing START.
TITLE_ROW, TITLE_COLS, TITLE_TILES = 14, (2, 9), [89, 25, 21, 10, 34, 14, 27]
#: From the title screen to a game of A-type, level 0 ([disasm] code/introScreens.s GameState07 and
#: code/menuScreens.s GameState0e, 0f, 11): the title screen reacts to START only; on the game-type screen
#: (A-TYPE preselected at power on, bank_000.s $02aa) A opens the music-type screen; there A (or START) opens
#: the level screen (level 0 preselected, introScreens.s $04de); there A (or START) starts the game.
#: PyBoy's wrapper presses START three times (START on the game-type screen skips the music screen).
START_SEQUENCE = ("start", "a", "a", "a")


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
    """True once the game has left play: game over (from its first frame, GS_GAME_OVER_INIT), or anything
    else that is not a game being played (a soft reset, a menu)."""
    return ram[GAME_STATE] not in IN_PLAY_STATES


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
    and A through the menus to an A-type game at level 0 (``start_sequence``, default
    :data:`START_SEQUENCE`), each press held one frame and followed by ``menu_wait`` frames. Reset raises
    RuntimeError if the sequence did not end in a game being played.
    """

    env_id = "gb/Tetris"

    def __init__(
        self,
        rom: PathLike | None = None,
        *,
        max_noops: int = 40,
        start_sequence: Sequence[str] = START_SEQUENCE,
        menu_wait: int = 8,
        **kwargs: Any,
    ) -> None:
        if max_noops < 0:
            raise ValueError(f"max_noops must be >= 0, got {max_noops}")
        bad = [b for b in start_sequence if b not in ALL_BUTTONS]
        if bad or not start_sequence:
            raise ValueError(f"start_sequence must be button names from {ALL_BUTTONS}, got {tuple(start_sequence)}")
        if menu_wait < 1:
            raise ValueError(f"menu_wait must be >= 1 frame, got {menu_wait}")
        self.max_noops = int(max_noops)
        self.start_sequence = tuple(start_sequence)
        self.menu_wait = int(menu_wait)
        super().__init__(rom, TetrisGame(), **kwargs)
        # Run to the title screen once; every reset starts from here. The tiles are drawn before the state
        # switches to the title screen's (introScreens.s, GameState06): wait for both, or START could be lost.
        for _ in range(1200):
            if (
                self.ram[GAME_STATE] == GS_TITLE_SCREEN_MAIN
                and self._pb.tilemap_background[TITLE_COLS[0] : TITLE_COLS[1], TITLE_ROW] == TITLE_TILES
            ):
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
        state = self.ram[GAME_STATE]
        if state not in IN_PLAY_STATES:
            raise RuntimeError(
                f"{self.env_id}: start_sequence {self.start_sequence} did not start a game: hGameState (0xFFE1) is "
                f"0x{state:02X} after it, expected 0x{GS_IN_GAME_MAIN:02X} (in game) or 0x{GS_IN_GAME_INIT:02X}"
            )
