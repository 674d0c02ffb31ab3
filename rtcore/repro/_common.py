"""What the experiments share: the paper's constants, CSV writing and a headless pyplot."""

from __future__ import annotations

import csv
from typing import Any

EXPERIMENTS = ("inaction", "scaling", "delay-learning")
PAPER_FRAMES = (1, 5, 8, 70, 596)  # delay in frames per model size: 55K, 1M, 10M, 100M, 1B (DESIGN.md)
TAU_M = 1 / 59.7275
JITTER = 0.1  # inference-time sd / mean
IMPALA_K = (1, 7, 29, 98)
PAPER_POKEMON = ((0.9e6, 7, 1), (10.4e6, 12, 3), (105e6, 72, 33))  # (params, inference, learners), DESIGN.md
UPDATE_EVERY = 4  # env steps per DQN update of batch 32 (the authors' Atari code: learn when steps % 4 == 0)


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    """Rows (dicts with the same keys) as a CSV file."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- inaction ---------------------------------------------------------------------------------------


