"""The same run spread over a Ray cluster: ``rtcore run --cluster ray[:ADDRESS]`` (``pip install "rtcore[ray]"``).

Shared memory stays within a node; Ray carries what crosses nodes. The roles are Ray actors in one
placement group (``--cluster-placement``):

- **env nodes** (``--env-nodes``, one bundle each): :class:`~rtcore.cluster.envnode.EnvNode` runs the local
  machinery of ``rtcore run`` on its node (env driver, ObsBoard, ActionBoard, the node's replay shard,
  its StaggerSchedule and, by default, its inference worker processes). Staggering keeps its meaning
  because it stays node-local: one schedule per env node, spacing that node's workers over its env's
  steps; the delay and inaction of each node are measured as on one machine and summed/weighted.
- **the learner group** (its own bundle, GPU nodes with ``--learner-gpus``):
  :class:`~rtcore.cluster.learners.LearnerGroup` holds the learner node's ParamStore, learner state and
  Turnstile; :class:`~rtcore.cluster.learners.Learner` actors run the local learner loop on it, so one
  learner applies at a time (the turnstile) as on one machine. The group's watchdog kills a learner stalled
  for half the turnstile's timeout before its turn is handed on (:mod:`rtcore.agent.stall`, as a local
  run's runner does), and the driver respawns it in the group's bundle.
- **replay batches** cross nodes from a :class:`~rtcore.cluster.sampler.ShardSampler` next to each shard,
  prefetched (``--batch-prefetch``) through Ray's object store, round-robin over the shards.
- **parameter versions** cross nodes through Ray's object store: the group ``ray.put``s the newest version
  at most every ``--param-interval`` s; each env node's :class:`~rtcore.cluster.params.ParamFollower`
  copies it into the node's ParamStore. Fetch, publish and age of each version are measured.
- **remote inference workers** (``--workers-on gpu``, ``--worker-gpus`` each): the forward pass on another
  node; a relay thread on the env node takes the worker's turn in the node's schedule, so the network
  time both ways is part of the pass the schedule sees and of the action's delay (measured apart too).
- **a lost node** (its raylet killed): its actors raise ``RayActorError``; the run writes it off, goes on
  with what is left and says so in the summary's ``faults`` and ``extra["cluster"]``.

Loopback: ``--cluster ray`` starts a one-node Ray instance on 127.0.0.1 (dashboard and usage stats off);
``ray:127.0.0.1:PORT`` stays on loopback too (:mod:`rtcore.cluster._ray`). On a real cluster every node
needs rtcore installed and the same versions of Python, torch and Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtcore.agent.accounting import RunSummary
    from rtcore.agent.config import RunConfig

__all__ = ["run_cluster"]


def run_cluster(cfg: "RunConfig") -> "RunSummary":
    """Runs ``cfg`` (with ``cfg.cluster`` set) on Ray; see :func:`rtcore.cluster.runner.run_cluster`.
    Ray is imported only here, so ``import rtcore.cluster`` works without it."""
    from rtcore.cluster.runner import run_cluster as run

    return run(cfg)
