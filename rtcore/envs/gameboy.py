"""Game Boy environments on PyBoy, headless and silent, at the console's 59.7275 frames/s.

:class:`GameBoyEnv` wraps any Game Boy ROM the user supplies (none ships with rtcore): one env step is
one video frame; action 0 presses nothing (the default action), action ``i >= 1`` presses
``buttons[i - 1]`` (by default the paper's six: A, B, LEFT, UP, RIGHT, DOWN) and holds it for
``hold_frames`` frames unless another button replaces it; the observation is the screen as 84x84 uint8
luma. Reward and termination are functions of RAM, given as a :class:`RamGame` (stateful across an
episode) or a plain ``reward_fn(ram) -> float``. Episodes start from the state after the boot ROM, or
from save states the user supplies (one sampled per episode).

``rtcore gb-record-state`` (this module's :func:`main`) records such a save state after a scripted
button sequence.
"""

from __future__ import annotations

import argparse
import io
import os
import warnings
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Callable, Protocol, Sequence, Union

import gymnasium as gym
import numpy as np

from rtcore.envs.base import check_discrete_action
from rtcore.envs.preprocess import OBS_SIZE, Preprocessor

#: Frames per second of the Game Boy: the 4.194304 MHz clock over 70224 clocks per frame.
GB_FPS = 4194304 / 70224  # 59.7275...
#: The paper's Game Boy action set, after the no-op.
DEFAULT_BUTTONS = ("a", "b", "left", "up", "right", "down")
ALL_BUTTONS = ("a", "b", "start", "select", "left", "right", "up", "down")
SCREEN_SHAPE = (144, 160)
# The boot ROM occupies 0x0000-0x00FF (DMG; a CGB one also 0x0200-0x08FF) and hands over to the cartridge
# at 0x0100 (Pan Docs, "Power Up Sequence"); PyBoy's BOOT register (0xFF50) reads 0xFF, so the end of the
# boot is seen as the program counter in cartridge code at a frame boundary. Episodes start after it.
_MAX_BOOT_FRAMES = 600

PathLike = Union[str, "os.PathLike[str]"]


class Ram(Protocol):
    """Anything indexable by a 16-bit address: ``pyboy.memory``, or a 64 KiB bytearray in tests."""

    def __getitem__(self, address: int) -> int: ...


class RamGame:
    """Reward and termination of one game as functions of its RAM.

    ``reset(ram)`` is called at the start of every episode (after the start routine), ``step(ram)`` after
    every frame and returns ``(reward, terminated)``. Subclasses keep whatever they need between frames
    (the previous score, faint counts). ``titles`` are the cartridge header titles the game accepts
    (empty: any ROM).
    """

    titles: tuple[str, ...] = ()

    def reset(self, ram: Ram) -> None:
        pass

    def step(self, ram: Ram) -> tuple[float, bool]:
        return 0.0, False


class _RewardFn(RamGame):
    """A plain ``reward_fn(ram)`` (and optional ``terminated_fn(ram)``) as a RamGame."""

    def __init__(self, reward_fn: Callable[[Ram], float] | None, terminated_fn: Callable[[Ram], bool] | None):
        self._reward_fn = reward_fn
        self._terminated_fn = terminated_fn

    def step(self, ram: Ram) -> tuple[float, bool]:
        r = float(self._reward_fn(ram)) if self._reward_fn is not None else 0.0
        return r, bool(self._terminated_fn(ram)) if self._terminated_fn is not None else False


# --- cartridge header ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RomHeader:
    """The parts of a cartridge header (0x100-0x14F, Pan Docs "The Cartridge Header") rtcore checks."""

    title: str
    cartridge_type: int
    cgb_flag: int
    header_checksum: int
    computed_checksum: int


def header_checksum(rom: bytes) -> int:
    """The header checksum over 0x134-0x14C, as the boot ROM computes it (stored at 0x14D)."""
    x = 0
    for b in rom[0x134:0x14D]:
        x = (x - b - 1) & 0xFF
    return x


def read_header(rom: bytes, what: str = "ROM") -> RomHeader:
    """Parse and check a Game Boy cartridge header; ValueError if ``rom`` is not a Game Boy ROM."""
    if len(rom) < 0x8000:
        raise ValueError(
            f"{what} is not a Game Boy ROM: {len(rom)} bytes, expected at least 32768 (a 32 KiB cartridge)"
        )
    stored, computed = rom[0x14D], header_checksum(rom)
    if stored != computed:
        raise ValueError(
            f"{what} is not a Game Boy ROM: header checksum at 0x14D is 0x{stored:02X}, "
            f"expected 0x{computed:02X} from bytes 0x134-0x14C"
        )
    cgb = rom[0x143]
    raw = rom[0x134 : 0x143 if cgb in (0x80, 0xC0) else 0x144]
    title = raw.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
    return RomHeader(title, rom[0x147], cgb, stored, computed)


def check_rom(rom: PathLike | None, titles: Sequence[str] = (), env_id: str = "GameBoyEnv") -> tuple[str, RomHeader]:
    """The ROM path and its header, or a clear error: missing path or file, not a Game Boy ROM, wrong game."""
    if rom is None or rom == "":
        want = f" (the {' or '.join(titles)} cartridge)" if titles else ""
        raise ValueError(
            f"{env_id} needs rom=<path to your Game Boy ROM>{want}; rtcore ships no game ROMs"
        )
    path = os.fspath(rom)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Game Boy ROM {path!r} does not exist (rom= must be the path to a .gb file)")
    with open(path, "rb") as f:
        data = f.read()
    header = read_header(data, what=f"ROM {path!r}")
    if titles and header.title not in titles:
        raise ValueError(
            f"ROM {path!r} is the wrong game for {env_id}: its header title is {header.title!r}, "
            f"expected {' or '.join(repr(t) for t in titles)}"
        )
    return path, header


def _import_pyboy() -> Any:
    with warnings.catch_warnings():
        # pysdl2 announces which SDL2 binaries it found; rtcore runs PyBoy headless and never uses SDL.
        warnings.filterwarnings("ignore", message="Using SDL2 binaries", category=UserWarning)
        import pyboy
    return pyboy


def open_pyboy(path: str, cgb: bool = False) -> Any:
    """A headless, silent PyBoy at unlimited speed, booted to the cartridge (boot ROM finished).

    ``cgb=False`` runs the original Game Boy (DMG), as the paper's games (Tetris, Pokemon Red/Blue) are.
    """
    pyboy = _import_pyboy()
    pb = pyboy.PyBoy(path, window="null", sound_emulated=False, sound_volume=0, log_level="ERROR", cgb=cgb)
    pb.set_emulation_speed(0)
    for _ in range(_MAX_BOOT_FRAMES):
        pb.tick(1, False)
        pc = pb.register_file.PC
        if 0x100 <= pc < 0x8000 and not (cgb and 0x200 <= pc < 0x900):
            break
    else:
        pb.stop(save=False)
        raise RuntimeError(f"ROM {path!r} did not finish booting within {_MAX_BOOT_FRAMES} frames")
    return pb


def _load_states(states: Sequence[Union[PathLike, bytes]] | None) -> list[bytes]:
    out = []
    for s in states or ():
        if isinstance(s, (bytes, bytearray)):
            out.append(bytes(s))
            continue
        p = os.fspath(s)
        if not os.path.isfile(p):
            raise FileNotFoundError(f"save state {p!r} does not exist (record one with `rtcore gb-record-state`)")
        with open(p, "rb") as f:
            out.append(f.read())
    return out


# --- the environment ----------------------------------------------------------------------------


class GameBoyEnv(gym.Env):
    """Any Game Boy ROM as a realtime env: one frame per step, 84x84 uint8 luma observations.

    Args:
        rom: path to the ROM (the user's; rtcore ships none).
        reward_fn: a :class:`RamGame`, or a function of RAM returning the step's reward (None: 0).
        terminated_fn: with a plain ``reward_fn``, a function of RAM that ends the episode.
        buttons: the buttons of actions 1..len(buttons) (action 0 presses nothing).
        hold_frames: frames a press is held (pressing the same button again re-arms the hold).
        states: save states (paths or bytes) to start episodes from, one sampled per episode; None
            starts every episode from the state after the boot ROM.
        titles: header titles to accept (default: the RamGame's; empty: any ROM).
        max_episode_steps: truncate an episode after this many steps (None: never).
        obs_size: the side of the square observation.
    """

    metadata = {"render_modes": []}
    env_id = "GameBoyEnv"

    def __init__(
        self,
        rom: PathLike | None,
        reward_fn: RamGame | Callable[[Ram], float] | None = None,
        *,
        terminated_fn: Callable[[Ram], bool] | None = None,
        buttons: Sequence[str] = DEFAULT_BUTTONS,
        hold_frames: int = 1,
        states: Sequence[Union[PathLike, bytes]] | None = None,
        titles: Sequence[str] | None = None,
        max_episode_steps: int | None = None,
        obs_size: int = OBS_SIZE,
    ) -> None:
        self.game = reward_fn if isinstance(reward_fn, RamGame) else _RewardFn(reward_fn, terminated_fn)
        if isinstance(reward_fn, RamGame) and terminated_fn is not None:
            raise ValueError("terminated_fn goes with a plain reward_fn; a RamGame decides termination itself")
        buttons = tuple(str(b).lower() for b in buttons)
        bad = [b for b in buttons if b not in ALL_BUTTONS]
        if bad or not buttons or len(set(buttons)) != len(buttons):
            raise ValueError(f"buttons must be distinct names from {ALL_BUTTONS}, got {buttons}")
        if isinstance(hold_frames, bool) or not isinstance(hold_frames, (int, np.integer)) or hold_frames < 1:
            raise ValueError(f"hold_frames must be an int >= 1, got {hold_frames!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps!r}")
        titles = tuple(self.game.titles if titles is None else titles)
        self.rom_path, self.header = check_rom(rom, titles, self.env_id)
        self._states = _load_states(states)
        self.buttons = buttons
        self.hold_frames = int(hold_frames)
        self.max_episode_steps = max_episode_steps
        self.frame_time = 1.0 / GB_FPS
        self.default_action = 0
        self.action_space = gym.spaces.Discrete(1 + len(buttons))
        self.observation_space = gym.spaces.Box(0, 255, (obs_size, obs_size), np.uint8)
        self._prep = Preprocessor(SCREEN_SHAPE, (obs_size, obs_size))
        self._pb = open_pyboy(self.rom_path)
        self.ram: Ram = self._pb.memory
        self._boot_state = self._save()
        self._held: str | None = None
        self._release_in = 0
        self._steps = 0
        #: Seconds the last step spent inside the emulator (the driver counts the rest as its own cost).
        self.emulator_time = 0.0

    # -- emulator plumbing
    def _save(self) -> bytes:
        buf = io.BytesIO()
        self._pb.save_state(buf)
        return buf.getvalue()

    def _load(self, state: bytes) -> None:
        self._pb.load_state(io.BytesIO(state))

    def _release(self) -> None:
        if self._held is not None:
            self._pb.button_release(self._held)
            self._held = None
            self._release_in = 0

    def press(self, button: str) -> None:
        """Press ``button`` (held for ``hold_frames`` frames from the next tick)."""
        if self._held != button:
            self._release()
            self._pb.button_press(button)
            self._held = button
        self._release_in = self.hold_frames

    def tick(self, frames: int = 1, render: bool = True) -> None:
        """Advance ``frames`` frames, releasing a held button when its hold runs out."""
        for _ in range(frames):
            self._pb.tick(1, render)
            if self._held is not None:
                self._release_in -= 1
                if self._release_in <= 0:
                    self._release()

    def _observe(self) -> np.ndarray:
        out = np.empty(self.observation_space.shape, np.uint8)
        # PyBoy's default DMG palette is grey (R = G = B), so the red channel is the luma: resize it in place.
        self._prep(self._pb.screen.ndarray[:, :, 0], out)
        return out

    def start_episode(self) -> None:
        """Called by reset after the start state is loaded: the game's start routine (none here)."""

    # -- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._release()
        if self._states:
            self._load(self._states[int(self.np_random.integers(len(self._states)))])
        else:
            self._load(self._boot_state)
        for b in ALL_BUTTONS:  # a state saved mid-press must not start the episode with a button held
            self._pb.button_release(b)
        self.start_episode()
        self.tick(1)  # render the first frame of the episode
        self.game.reset(self.ram)
        self._steps = 0
        return self._observe(), {}

    def step(self, action: Any):
        a = check_discrete_action(action, self.action_space.n, self.env_id)
        if a:
            self.press(self.buttons[a - 1])
        t0 = perf_counter()
        self.tick(1)
        self.emulator_time = perf_counter() - t0
        reward, terminated = self.game.step(self.ram)
        self._steps += 1
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps and not terminated
        return self._observe(), reward, terminated, truncated, {}

    def emulator_step(self, action: int) -> float:
        """One raw emulator frame with the button, no observation or reward (the benchmark's peer)."""
        if action:
            self.press(self.buttons[action - 1])
        self.tick(1)
        return 0.0

    def save_state(self) -> bytes:
        """The emulator's complete state now (what ``states=`` accepts)."""
        return self._save()

    def close(self) -> None:
        pb, self._pb = getattr(self, "_pb", None), None
        if pb is not None:
            pb.stop(save=False)  # never write a .ram file next to the user's ROM

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.rom_path!r}, title={self.header.title!r})"


# --- rtcore gb-record-state ---------------------------------------------------------------------


def parse_script(script: str) -> list[tuple[str | None, int]]:
    """``"start,wait:60,a:3,down"`` -> [("start", 1), (None, 60), ("a", 3), ("down", 1)].

    ``BUTTON[:N]`` holds BUTTON for N frames (default 1) and then releases it; ``wait:N`` runs N frames
    with no button.
    """
    out: list[tuple[str | None, int]] = []
    for token in (t.strip().lower() for t in script.split(",")):
        if not token:
            continue
        name, _, count = token.partition(":")
        try:
            n = int(count) if count else 1
        except ValueError:
            raise ValueError(f"bad frame count in {token!r}: expected BUTTON[:FRAMES] or wait:FRAMES") from None
        if n < 1:
            raise ValueError(f"frame count must be >= 1 in {token!r}")
        if name == "wait":
            out.append((None, n))
        elif name in ALL_BUTTONS:
            out.append((name, n))
        else:
            raise ValueError(f"unknown step {token!r}: expected one of {ALL_BUTTONS} or wait:FRAMES")
    return out


def record_state(rom: PathLike, script: str, out: PathLike, from_state: PathLike | None = None,
                 titles: Sequence[str] = ()) -> int:
    """Boot ``rom`` (or load ``from_state``), play ``script``, write the save state to ``out``.

    Returns the number of frames played.
    """
    path, _ = check_rom(rom, titles, "gb-record-state")
    steps = parse_script(script)
    pb = open_pyboy(path)
    try:
        if from_state is not None:
            pb.load_state(io.BytesIO(_load_states([from_state])[0]))
        frames = 0
        for button, n in steps:
            if button is not None:
                pb.button_press(button)
            pb.tick(n, False)
            if button is not None:
                pb.button_release(button)
            pb.tick(1, False)  # one released frame so the next press is a new press
            frames += n + 1
        with open(os.fspath(out), "wb") as f:
            pb.save_state(f)
        return frames
    finally:
        pb.stop(save=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Record a PyBoy save state after a scripted button sequence (e.g. the start of a Pokemon battle, "
        "for gb/PokemonRed states=[...])."
    )
    parser.add_argument("rom", help="path to the Game Boy ROM (yours; rtcore ships none)")
    parser.add_argument("out", help="where to write the save state")
    parser.add_argument(
        "--script", default="",
        help="comma-separated steps played after boot: BUTTON[:FRAMES] (held, then released for one frame) "
             "or wait:FRAMES; buttons: " + ", ".join(ALL_BUTTONS) + ". Example: start,wait:120,a,wait:60",
    )
    parser.add_argument("--from-state", default=None, help="start from this save state instead of the boot")
    parser.add_argument("--title", action="append", default=[], help="refuse a ROM whose header title differs")


def main(args: argparse.Namespace) -> int:
    from rtcore._validate import OPTION_ERRORS, bad_option

    try:
        check_rom(args.rom, tuple(args.title), "gb-record-state")
        parse_script(args.script)
        if args.from_state is not None and not os.path.isfile(args.from_state):
            raise FileNotFoundError(f"--from-state {args.from_state!r} does not exist")
    except OPTION_ERRORS as exc:
        return bad_option("rtcore gb-record-state", exc)
    frames = record_state(args.rom, args.script, args.out, args.from_state, tuple(args.title))
    print(f"wrote {args.out} after {frames} frames ({frames / GB_FPS:.1f} s of game time)")
    return 0
