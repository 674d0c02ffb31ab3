"""Ray itself: importing it with a clear error, connecting on loopback, placement, the errors that mean a
lost node.

Loopback: a local instance (``--cluster ray``) and any address on 127.0.0.1 keep every Ray process and
every connection on 127.0.0.1. Ray's ``ray.init(address=...)`` rewrites a loopback address to the
machine's interface address (``resolve_ip_for_localhost``) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
is set before Ray is imported; :func:`pin_loopback` sets it (and the node-IP variables) for this process
and the Ray processes it starts. The dashboard and usage statistics are off.

Imports on the workers: ``ray.init`` puts the driver's current directory on every worker's ``sys.path``,
ahead of site-packages. Run from another rtcore source tree (a checkout whose extension is not built,
as in CI, which installs the package), the actors would import that tree and fail; :func:`init` then
calls ``ray.init`` from a neutral directory. From any other directory (a user's project, whose env
factories the actors import) the current directory is kept.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

__all__ = ["import_ray", "pin_loopback", "connect", "init", "lost_errors", "bundle_strategy", "PLACEMENT_STRATEGIES",
           "OBJECT_STORE_BYTES", "LOOPBACK"]

LOOPBACK = "127.0.0.1"
OBJECT_STORE_BYTES = 512 * 2**20  # of a local instance: a k=29 Impala version (420 MB) fits, with room
PLACEMENT_STRATEGIES = {"spread": "SPREAD", "strict-spread": "STRICT_SPREAD", "pack": "PACK"}
INSTALL_HINT = 'pip install "rtcore[ray]"'


def pin_loopback() -> None:
    """Environment for a Ray that stays on 127.0.0.1 (this process and the Ray processes it starts).

    Must run before ``import ray`` for the address rewrite (see the module docstring)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep 127.0.0.1 as given, not the interface address
    os.environ["RAY_NODE_IP_ADDRESS"] = LOOPBACK
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def import_ray(loopback: bool = True) -> Any:
    """``ray``, or an ImportError that names the extra to install."""
    if loopback:
        pin_loopback()
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"--cluster ray needs Ray: {INSTALL_HINT} ({exc})") from None
    if loopback:
        from ray._private import ray_constants

        if ray_constants.ENABLE_RAY_CLUSTER:  # imported before pin_loopback: say so rather than leave loopback
            raise RuntimeError("ray was imported before rtcore.cluster pinned it to 127.0.0.1; set "
                               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray (or import rtcore.cluster first)")
    return ray


@contextlib.contextmanager
def _cwd_not_shadowing_rtcore() -> Iterator[None]:
    """The current directory for ``ray.init``: a neutral one when this one holds an rtcore source tree other
    than the rtcore imported here (see the module docstring), else this one."""
    import tempfile
    from pathlib import Path

    import rtcore

    cwd = os.getcwd()
    installed = Path(rtcore.__file__).resolve().parent.parent
    if not (Path(cwd) / "rtcore" / "__init__.py").exists() or Path(cwd).resolve() == installed:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="rtcore-ray-init-") as neutral:
        os.chdir(neutral)
        try:
            yield
        finally:
            os.chdir(cwd)


def init(**kw: Any) -> Any:
    """``ray.init(**kw)`` whose workers import the rtcore this process imported (see the module docstring)."""
    import ray

    with _cwd_not_shadowing_rtcore():
        return ray.init(**kw)


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host in ("127.0.0.1", "localhost", "::1", "[::1]")


def connect(cluster: str, *, num_cpus: int | None = None, log_to_driver: bool = True) -> tuple[Any, bool]:
    """Connects this process to Ray for ``cluster`` (``ray`` or ``ray:ADDRESS``); returns ``(ray, started)``,
    ``started`` when a local instance was started here (the caller shuts it down).

    An existing connection (``ray.is_initialized()``, e.g. a test's cluster) is used as it is.
    ``log_to_driver``: print the actors' output here (off for ``--json``, whose stdout is one object)."""
    import sys

    address = cluster[4:] if cluster.startswith("ray:") else None
    loopback = address is None or _is_loopback(address)
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return sys.modules["ray"], False  # connected already (a test's cluster, the user's own ray.init)
    ray = import_ray(loopback)
    kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=log_to_driver)
    if loopback:
        kw["_node_ip_address"] = LOOPBACK
    if address is None:
        init(num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES, **kw)
        return ray, True
    init(address=address, **kw)
    return ray, False


def lost_errors() -> tuple[type, ...]:
    """The exceptions that mean an actor (and so, usually, its node) is gone."""
    import ray.exceptions as rex

    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError", "OwnerDiedError",
             "ObjectLostError", "WorkerCrashedError", "LocalRayletDiedError")
    return tuple(getattr(rex, n) for n in names if hasattr(rex, n))


def bundle_strategy(pg: Any, index: int) -> Any:
    """Scheduling strategy that puts an actor into bundle ``index`` of placement group ``pg``."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index,
                                            placement_group_capture_child_tasks=False)
