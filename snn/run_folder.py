"""A run's folder: ``config.json``, ``metrics.csv`` (one row per epoch) and ``checkpoint.pt``.

``python -m snn.train --out OUT`` and every retrain seed of a search write the same three
files after each epoch through ``RunFolder.on_epoch``, so either can be resumed or rerun.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoint import EpochRecord, RunState
from .io import write_csv, write_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class RunFolder:
    """The files of one run under ``path``."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    def resume_point(self) -> Path | None:
        """The checkpoint a resumed run continues from, when there is one."""
        return self.checkpoint if self.checkpoint.exists() else None

    def on_epoch(self, record: EpochRecord, state: RunState) -> None:
        """Write the three files after an epoch (each atomically); use as train's ``on_epoch``."""
        write_json(self.config, state.config.to_dict())
        write_csv(self.metrics, state.history.epochs)
        state.save(self.checkpoint)
