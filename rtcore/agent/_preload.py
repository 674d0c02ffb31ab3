"""Imported once by the run's fork server (see :func:`rtcore.agent._proc.process_context`): everything a
worker or learner imports, so each child is forked with it already loaded and shares its pages.

What this saves (measured on this project's CI box, PSS of one process): ``import torch`` alone is
~142 MiB of private memory per process when every child imports it afresh (the relocated data of
libtorch, Python objects of torch's modules). Forked from a server that imported it, those pages are
shared copy-on-write by every child, and PSS divides them among them. Nothing here runs a torch op: no
OpenMP pool or CUDA context may exist in a process that forks.
"""

import gc
import sys

import numpy  # noqa: F401
import torch  # noqa: F401
import torch.nn.functional  # noqa: F401

import rtcore  # noqa: F401
import rtcore.agent.dqn  # noqa: F401
import rtcore.agent.inference  # noqa: F401
import rtcore.agent.learner  # noqa: F401
import rtcore.agent.sequential  # noqa: F401
import rtcore.models  # noqa: F401
import rtcore.models.export  # noqa: F401
import rtcore.shared.params  # noqa: F401

# Out of the cyclic collector's reach: a collection in a child would write the header of every object
# imported above and un-share its page.
gc.collect()
gc.freeze()

# In the fork server itself (not wherever this module is merely imported): die with the runner, so the
# children forked from here, which die with their parent (the server), follow the runner too.
if any("multiprocessing.forkserver" in a for a in getattr(sys, "orig_argv", ())):
    from rtcore.shared._liveness import die_with_parent

    die_with_parent()
