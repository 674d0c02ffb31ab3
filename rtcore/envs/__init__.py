"""rtcore's realtime environments: Atari (ale-py), Game Boy (PyBoy), MinAtar, Catch, any Gymnasium env.

``rtcore.make(env_id, **kwargs)`` builds an env by id:

* ``ALE/<Game>-v5`` (any ale-py game: ``ALE/Pong-v5``, ``ALE/Boxing-v5``, ...): :class:`AtariEnv`;
* ``gb/Tetris``, ``gb/PokemonRed``, ``gb/PokemonBlue``, ``gb/PokemonYellow`` and the catching task
  ``gb/Pokemon{Red,Blue,Yellow}-Catch`` (``rom=`` the path to your cartridge;
  Pokemon also ``states=``): :class:`TetrisEnv`, :class:`PokemonEnv`;
* ``gb/TestRom``: rtcore's own tiny test cartridge (no ROM needed), for tests and benchmarks;
* ``rtcore/Catch``: a tiny built-in game (:class:`CatchEnv`), for tests and demos;
* ``minatar/<Game>``: the five MinAtar games (Asterix, Breakout, Freeway, Seaquest, SpaceInvaders;
  ``pip install "rtcore[minatar]"``), :class:`MinAtarEnv`;
* any id registered with Gymnasium (``CartPole-v1``, ...);
* ``package.module:factory``: a callable (kwargs go to it) returning a ``gymnasium.Env``: the way to
  bring your own game, robot or simulator.

Every env returns one frame per step (stacking is the boards' and the replay buffer's job) and
exposes ``default_action`` and ``frame_time`` (native seconds per step, or None when the env has no
native rate). Envs from outside rtcore are wrapped in :class:`RealtimeEnv`, which normalizes their
observations (:mod:`rtcore.envs.adapter`: uint8 channel-first image frames or float32 vectors) and
takes ``default_action=`` / ``frame_time=`` when the env has no such attribute. The ordinary
``reset``/``step`` loop works as with any Gymnasium env; :class:`rtcore.envs.driver.EnvDriver` runs one
on the wall clock.
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
    "CatchEnv",
    "MinAtarEnv",
    "RealtimeEnv",
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
    "CatchEnv": "rtcore.envs.catch",
    "MinAtarEnv": "rtcore.envs.minatar",
    "RealtimeEnv": "rtcore.envs.adapter",
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


def _catch(**kw: Any) -> gym.Env:
    from rtcore.envs.catch import CatchEnv

    return CatchEnv(**kw)


_RTCORE_IDS: dict[str, Callable[..., gym.Env]] = {"rtcore/Catch": _catch}
_MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")


def env_ids() -> list[str]:
    """rtcore's own ids (Game Boy, Catch, MinAtar) and the patterns ``ALE/<Game>-v5``, any Gymnasium id,
    ``package.module:factory``."""
    return (sorted(_GB_IDS) + sorted(_RTCORE_IDS) + [f"minatar/{g}" for g in _MINATAR_GAMES]
            + ["ALE/<Game>-v5", "<any registered Gymnasium id>", "package.module:factory"])


def make(env_id: str, *, delay: int | None = None, sequential: bool = False, delay_convention: str = "rtcore",
         default_action: int | None = None, frame_time: float | None = None, action_history: int = 0,
         **kwargs: Any) -> gym.Env:
    """Build the rtcore env ``env_id`` (see the module docstring); kwargs go to its constructor.

    ``default_action`` and ``frame_time``: for an env that has no such attribute (Gymnasium ids and
    factories); ``default_action`` given here also replaces the env's own. ``delay=d`` wraps it in
    :class:`DelayWrapper` (the paper's delay simulation; ``sequential=True`` also applies ``d``
    default actions after every action; ``delay_convention="authors"``: the authors' observation age
    and zero padding; ``action_history=K``: ``info["action_history"]``, the agent's last K actions, see
    :class:`DelayWrapper`). Raises ValueError for an unknown id, naming the ids that exist, and for an env
    without a default action when none is given.
    """
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a string such as 'ALE/Pong-v5' or 'gb/Tetris', got {env_id!r}")
    if delay is None and sequential:
        raise ValueError("sequential=True needs delay=<frames>")
    if delay is None and action_history:
        raise ValueError("action_history=K needs delay=<frames> (the DelayWrapper reports it)")
    env = _make(env_id, default_action, frame_time, **kwargs)
    if delay is None:
        return env
    from rtcore.envs.delay import DelayWrapper

    try:
        return DelayWrapper(env, delay=delay, sequential=sequential, convention=delay_convention,
                            action_history=action_history)
    except Exception:
        env.close()
        raise


def check_env_id(env_id: str, rom: str | None = None) -> None:
    """Raises the ValueError :func:`make` would for an unknown ``env_id``, without building the env;
    with ``rom`` (or for a game that needs one), also checks that it is a Game Boy ROM file. A
    ``package.module:factory`` id is checked by importing the module and finding the callable."""
    if env_id in _GB_IDS and (rom or env_id != "gb/TestRom"):
        from rtcore.envs.gameboy import check_rom

        check_rom(rom, (), env_id)
    elif env_id.startswith("ALE/"):
        from rtcore.envs.atari import resolve_ale_id

        resolve_ale_id(env_id)
    elif env_id in _GB_IDS or env_id in _RTCORE_IDS:
        return
    elif env_id.startswith("minatar/"):
        game = env_id.split("/", 1)[1]
        if game not in _MINATAR_GAMES:
            raise ValueError(f"unknown env id {env_id!r}: expected minatar/<Game> with Game one of "
                             f"{', '.join(_MINATAR_GAMES)}")
    elif _is_factory_id(env_id):
        _find_factory(env_id)
    elif env_id not in gym.registry:
        known = list(_GB_IDS) + list(_RTCORE_IDS) + [f"minatar/{g}" for g in _MINATAR_GAMES] + list(gym.registry)
        close = difflib.get_close_matches(env_id, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown env id {env_id!r}: expected ALE/<Game>-v5 (e.g. ALE/Pong-v5), one of "
            f"{', '.join(sorted(_GB_IDS) + sorted(_RTCORE_IDS))}, minatar/<Game>, a registered Gymnasium id "
            f"(e.g. CartPole-v1) or package.module:factory{hint}"
        )


def _is_factory_id(env_id: str) -> bool:
    return ":" in env_id and "/" not in env_id.split(":", 1)[0]


def _make(env_id: str, default_action: int | None, frame_time: float | None, **kwargs: Any) -> gym.Env:
    from rtcore.envs.adapter import RealtimeEnv, observation_spec

    if env_id.startswith("ALE/"):
        from rtcore.envs.atari import AtariEnv

        env: gym.Env = AtariEnv(env_id, **kwargs)
    elif env_id in _GB_IDS or env_id in _RTCORE_IDS:
        env = (_GB_IDS.get(env_id) or _RTCORE_IDS[env_id])(**kwargs)
    elif env_id.startswith("minatar/"):
        check_env_id(env_id)
        from rtcore.envs.minatar import MinAtarEnv

        env = MinAtarEnv(env_id.split("/", 1)[1], **kwargs)
    elif _is_factory_id(env_id):
        env = _from_factory(env_id, **kwargs)
    else:
        check_env_id(env_id)  # raises for an unknown id, naming the ids that exist
        env = gym.make(env_id, **kwargs)
    try:
        if (default_action is None and frame_time is None and getattr(env, "default_action", None) is not None
                and getattr(env, "frame_time", None) is not None and observation_spec(env).identity):
            return env  # already an rtcore env: nothing to adapt
        return RealtimeEnv(env, default_action=default_action, frame_time=frame_time, name=repr(env_id))
    except Exception:
        env.close()
        raise


def _find_factory(env_id: str) -> Callable[..., Any]:
    """The callable named by ``package.module:factory`` (ValueError naming what is missing)."""
    module_name, _, attr = env_id.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"env id {env_id!r}: cannot import module {module_name!r} ({exc}); expected "
                         f"package.module:factory with the module on the Python path") from None
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ValueError(f"env id {env_id!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise ValueError(f"env id {env_id!r}: {attr!r} is not callable; expected a function or class returning "
                         f"a gymnasium.Env")
    return factory


def _from_factory(env_id: str, **kwargs: Any) -> gym.Env:
    """``package.module:factory`` -> ``factory(**kwargs)``, checked to be a Gymnasium env."""
    attr = env_id.partition(":")[2]
    env = _find_factory(env_id)(**kwargs)
    if not isinstance(env, gym.Env):
        raise ValueError(f"env id {env_id!r}: {attr}() returned {type(env).__name__}, expected a gymnasium.Env")
    return env
