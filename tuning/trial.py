"""One Ray Tune trial: the snn trainer on one sampled configuration, reporting every epoch.

Each epoch's record goes to Ray with a checkpoint, so ASHA can stop the trial at a rung and
Ray can resume or retry it from its last epoch.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from snn.data import Dataset, make_splits
from snn.training import RunState, train

from .searcher import DIVERGED
from .space import SearchSpace

CHECKPOINT_FILE = "checkpoint.pt"
# Test hooks: a trial crashes once at this epoch (a marker file records that it did);
# trials wait at their start while this file exists (so a test can look at a live search).
FAULT_ENV = "SNN_TUNE_CRASH_ONCE_AT_EPOCH"
PAUSE_ENV = "SNN_TUNE_PAUSE_WHILE_EXISTS"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares: the space (fixed values, epochs) and per-trial CPU threads."""

    space: SearchSpace
    cpus_per_trial: float
    device: str


def run_trial(sampled: dict[str, Any], setup: TrialSetup, data: Dataset) -> None:
    """Ray function trainable: train one sampled config for the budget's epochs per trial."""
    _wait_while_paused()
    torch.set_num_threads(max(1, int(setup.cpus_per_trial)))
    config = setup.space.config_for(sampled, epochs=setup.space.budget.epochs_per_trial, device=setup.device)
    splits = make_splits(data, val_size=config.val_size, limit_train=config.limit_train,
                         limit_test=config.limit_test, device=_device(config.device))
    node_id = ray.get_runtime_context().get_node_id()

    def report(record: dict[str, Any], state: RunState) -> None:
        _maybe_crash(record["epoch"])
        metrics = {**record, DIVERGED: state.history.status == "diverged", "node_id": node_id}
        with tempfile.TemporaryDirectory() as folder:
            state.save(Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        train(config, splits, on_epoch=report)
        return
    with checkpoint.as_directory() as folder:
        train(config, splits, on_epoch=report, resume_from=Path(folder) / CHECKPOINT_FILE)


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _wait_while_paused(limit_seconds: float = 600) -> None:
    pause = os.environ.get(PAUSE_ENV)
    deadline = time.monotonic() + limit_seconds
    while pause and Path(pause).exists() and time.monotonic() < deadline:
        time.sleep(0.2)


def _maybe_crash(epoch: int) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    at_epoch, marker_dir = spec.split(":", 1)
    marker = Path(marker_dir) / f"crashed-{tune.get_context().get_trial_id()}"
    if epoch == int(at_epoch) and not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected crash at epoch {epoch} ({FAULT_ENV})")
