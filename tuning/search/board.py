"""The progress board: a small Ray actor the trials post their in-epoch progress to.

A module of its own that imports only Ray: the board's worker process imports it while the first
trial's worker starts, and need not import Ray Tune and pandas (~0.6 s of CPU) for a dictionary.
"""

from __future__ import annotations

import ray

BOARD_NAME = "snn-tune-progress"  # by name, so a table restored from Ray's experiment state finds the new board


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Where the trials post (epoch, batch, batches per epoch); the driver reads it for the table."""

    def __init__(self) -> None:
        self._progress: dict[str, tuple[int, int, int]] = {}

    def update(self, trial_id: str, epoch: int, batch: int, batches: int) -> None:
        self._progress[trial_id] = (epoch, batch, batches)

    def snapshot(self) -> dict[str, tuple[int, int, int]]:
        return dict(self._progress)


def start_board():
    """The progress board of this Ray session (one per search)."""
    return ProgressBoard.options(name=BOARD_NAME, get_if_exists=True).remote()
