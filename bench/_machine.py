"""What every bench prints about the machine it ran on: cores and load average.

Timings on a shared machine are only as good as the quiet they were taken in, so each bench prints
the load average (1, 5 and 15 minutes, from ``os.getloadavg``) when it starts and when it ends, and
puts both in its JSON line. A 1-minute load above the core count means other processes were waiting
for a CPU during the run: its tails are the scheduler's, and its ratios are rougher.
"""

from __future__ import annotations

import os
import platform


def load() -> dict:
    """{"cores": n, "loadavg": [1 min, 5 min, 15 min]} now."""
    return {"cores": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def describe(at_start: dict, at_end: dict | None = None) -> str:
    """One line: host, cores, load average at the start (and end) of the run, and a warning when busy."""
    line = f"machine: {platform.node()}, {at_start['cores']} cores, load average {_fmt(at_start)} at start"
    worst = at_start["loadavg"][0]
    if at_end is not None:
        line += f", {_fmt(at_end)} at end"
        worst = max(worst, at_end["loadavg"][0])
    if worst > (at_start["cores"] or 1):
        line += " (busy: other processes competed for the CPUs; figures are rougher)"
    return line


def _fmt(m: dict) -> str:
    return "/".join(f"{x:.2f}" for x in m["loadavg"])
