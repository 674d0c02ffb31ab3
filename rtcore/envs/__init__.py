"""rtcore's realtime environments: Atari (ale-py), Game Boy (PyBoy), the delay simulation, the driver.

``rtcore.make(env_id, **kwargs)`` builds an env by id:

* ``ALE/<Game>-v5`` (any ale-py game: ``ALE/Pong-v5``, ``ALE/Boxing-v5``, ...): :class:`AtariEnv`;
* ``gb/Tetris``, ``gb/PokemonRed``, ``gb/PokemonBlue``, ``gb/PokemonYellow`` and the catching task
  ``gb/Pokemon{Red,Blue,Yellow}-Catch`` (``rom=`` the path to your cartridge;
  Pokemon also ``states=``): :class:`TetrisEnv`, :class:`PokemonEnv`;
* ``gb/TestRom``: rtcore's own tiny test cartridge (no ROM needed), for tests and benchmarks.

Every env returns one 84x84 uint8 grayscale frame per step (stacking is the boards' and the replay
buffer's job), and exposes ``default_action`` and ``frame_time`` (native seconds per step). The
ordinary ``reset``/``step`` loop works as with any Gymnasium env; :class:`rtcore.envs.driver.EnvDriver`
runs one on the wall clock.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable

import gymnasium as gym

__all__ = [
    "make",
    "env_ids",
    "check_env_id",
    "AtariEnv",
    "GameBoyEnv",
    "RamGame",
    "TetrisEnv",
    "PokemonEnv",
    "DelayWrapper",
    "Preprocessor",
    "EnvDriver",
    "DriverStats",
    "DriverStatsBlock",
]

_LAZY = {
    "AtariEnv": "rtcore.envs.atari",
    "GameBoyEnv": "rtcore.envs.gameboy",
    "RamGame": "rtcore.envs.gameboy",
    "TetrisEnv": "rtcore.envs.tetris",
    "PokemonEnv": "rtcore.envs.pokemon",
    "DelayWrapper": "rtcore.envs.delay",
    "Preprocessor": "rtcore.envs.preprocess",
    "EnvDriver": "rtcore.envs.driver",
    "DriverStats": "rtcore.envs.driver",
    "DriverStatsBlock": "rtcore.envs.driver",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rtcore.envs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _tetris(**kw: Any) -> gym.Env:
    from rtcore.envs.tetris import TetrisEnv

    return TetrisEnv(**kw)


def _pokemon(version: str, task: str = "battle") -> Callable[..., gym.Env]:
    def build(**kw: Any) -> gym.Env:
        from rtcore.envs.pokemon import PokemonEnv

        return PokemonEnv(version=version, task=task, **kw)

    return build


def _testrom(**kw: Any) -> gym.Env:
    from rtcore.envs.testrom import make_test_env

    return make_test_env(**kw)


# Game Boy ids -> constructor. ALE ids are resolved through ale-py's registry.
_GB_IDS: dict[str, Callable[..., gym.Env]] = {
    "gb/Tetris": _tetris,
    "gb/PokemonRed": _pokemon("red"),
    "gb/PokemonBlue": _pokemon("blue"),
    "gb/PokemonYellow": _pokemon("yellow"),
    "gb/PokemonRed-Catch": _pokemon("red", "catch"),
    "gb/PokemonBlue-Catch": _pokemon("blue", "catch"),
    "gb/PokemonYellow-Catch": _pokemon("yellow", "catch"),
    "gb/TestRom": _testrom,
}


def env_ids() -> list[str]:
    """The Game Boy ids, and the ALE id pattern (any ``ALE/<Game>-v5`` of ale-py)."""
    return sorted(_GB_IDS) + ["ALE/<Game>-v5"]


def make(env_id: str, *, delay: int | None = None, sequential: bool = False, delay_convention: str = "rtcore",
         **kwargs: Any) -> gym.Env:
    """Build the rtcore env ``env_id`` (see the module docstring); kwargs go to its constructor.

    ``delay=d`` wraps it in :class:`DelayWrapper` (the paper's delay simulation; ``sequential=True``
    also applies ``d`` default actions after every action; ``delay_convention="authors"``: the
    authors' observation age and zero padding). Raises ValueError for an unknown id, naming the ids
    that exist.
    """
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a string such as 'ALE/Pong-v5' or 'gb/Tetris', got {env_id!r}")
    if delay is None and sequential:
        raise ValueError("sequential=True needs delay=<frames>")
    env = _make(env_id, **kwargs)
    if delay is None:
        return env
    from rtcore.envs.delay import DelayWrapper

    try:
        return DelayWrapper(env, delay=delay, sequential=sequential, convention=delay_convention)
    except Exception:
        env.close()
        raise


def check_env_id(env_id: str, rom: str | None = None) -> None:
    """Raises the ValueError :func:`make` would for an unknown ``env_id``, without building the env;
    with ``rom`` (or for a game that needs one), also checks that it is a Game Boy ROM file."""
    if env_id in _GB_IDS and (rom or env_id != "gb/TestRom"):
        from rtcore.envs.gameboy import check_rom

        check_rom(rom, (), env_id)
    elif env_id.startswith("ALE/"):
        from rtcore.envs.atari import resolve_ale_id

        resolve_ale_id(env_id)
    elif env_id not in _GB_IDS:
        close = difflib.get_close_matches(env_id, list(_GB_IDS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown env id {env_id!r}: expected ALE/<Game>-v5 (e.g. ALE/Pong-v5) or one of "
            f"{', '.join(sorted(_GB_IDS))}{hint}"
        )


def _make(env_id: str, **kwargs: Any) -> gym.Env:
    if env_id.startswith("ALE/"):
        from rtcore.envs.atari import AtariEnv

        return AtariEnv(env_id, **kwargs)
    build = _GB_IDS.get(env_id)
    if build is None:
        check_env_id(env_id)  # raises, naming the ids that exist
    return build(**kwargs)
