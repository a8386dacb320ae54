"""One Ray Tune trial: the snn trainer on one sampled configuration, reporting every epoch.

Each epoch's record goes to Ray with a checkpoint, so ASHA can stop the trial at a rung and
Ray can resume or retry it from its last epoch.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import torch
from ray import tune

from snn.allocator import keep_freed_memory
from snn.checkpoint import read_checkpoint
from snn.data import Dataset, make_splits
from snn.run_folder import CHECKPOINT_FILE
from snn.training import RunState, SilenceRule, train

from ..experiment import DIVERGED, NODE_ID
from .digests import SigningHandler
from .space import SearchSpace


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares: the space (fixed values, epochs), per-trial CPU threads, the device."""

    space: SearchSpace
    cpus_per_trial: float
    device: str
    progress_board: Any = None  # a board.ProgressBoard actor, or None


def run_trial(sampled: dict[str, Any], setup: TrialSetup, data: Dataset) -> None:
    """Ray function trainable: train one sampled config for the budget's epochs per trial."""
    keep_freed_memory()  # the trial process's choice (snn/allocator.py): large CPU tensors reused without page faults
    torch.set_num_threads(max(1, int(setup.cpus_per_trial)))
    config = setup.space.config_for(sampled, epochs=setup.space.budget.epochs_per_trial, device=setup.device)
    network = setup.space.net
    splits = make_splits(data, config)
    node_id = ray.get_runtime_context().get_node_id()
    epochs_reported = [0]

    def report(record: dict[str, Any], state: RunState) -> None:
        epochs_reported[0] = record["epoch"]
        metrics = {**record, DIVERGED: state.history.status == "diverged", NODE_ID: node_id}
        with tempfile.TemporaryDirectory() as folder:
            state.save(Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    def post_progress(i: int, n: int, _loss: float) -> None:
        if setup.progress_board is not None and (i % max(1, n // 20) == 0 or i == n - 1):
            setup.progress_board.update.remote(trial_id, epochs_reported[0] + 1, i + 1, n)

    trial_id = tune.get_context().get_trial_id()
    silence = None if setup.space.budget.silence is None else SilenceRule(**setup.space.budget.silence)
    with checkpoint_file(tune.get_checkpoint()) as resume_from:
        if resume_from is not None:
            epochs_reported[0] = len(read_checkpoint(resume_from)["history"])
        train(
            config,
            splits,
            on_epoch=report,
            on_batch=post_progress,
            resume_from=resume_from,
            silence=silence,
            network=network,
        )


@contextlib.contextmanager
def checkpoint_file(checkpoint: tune.Checkpoint | None) -> Iterator[Path | None]:
    """The trial's checkpoint file to resume from: read in place in the experiment folder when its file system
    is this machine's (the search's own signing one, or pyarrow's local one) and holds it, else from Ray's
    temporary local copy.

    ``Checkpoint.as_directory`` copies a checkpoint to the temporary folder whenever its file system is not
    pyarrow's ``LocalFileSystem``, which the search's signing file system is not; the copy is held for the
    whole trial, and a trial killed meanwhile (SIGKILL, out of memory) leaves it there.
    """
    if checkpoint is None:
        yield None
        return
    fs = checkpoint.filesystem
    local = isinstance(fs, pyarrow.fs.LocalFileSystem) or (
        isinstance(fs, pyarrow.fs.PyFileSystem) and isinstance(fs.handler, SigningHandler)
    )
    in_place = Path(checkpoint.path) / CHECKPOINT_FILE
    if local and in_place.is_absolute() and in_place.is_file():
        yield in_place
        return
    with checkpoint.as_directory() as folder:
        yield Path(folder) / CHECKPOINT_FILE
