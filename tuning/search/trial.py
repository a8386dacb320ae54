"""One Ray Tune trial: the snn trainer on one sampled configuration, reporting every epoch.

Each epoch's record goes to Ray with a checkpoint, so ASHA can stop the trial at a rung and
Ray can resume or retry it from its last epoch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import torch
from ray import tune

from snn.allocator import keep_freed_memory
from snn.checkpoint import CheckpointError, read_checkpoint
from snn.data import Dataset, make_splits
from snn.run_folder import CHECKPOINT_FILE
from snn.training import RunState, SilenceRule, train

from ..experiment import DIVERGED, NODE_ID
from .digests import SigningHandler
from .space import SearchSpace

STAGING_PREFIX = "snn-tune-checkpoint-"  # + the trial process's id + "-": a checkpoint on its way to Ray
STAGING_STALE_S = 3600  # a staging folder younger than this is never swept


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares: the space (fixed values, epochs), per-trial CPU threads, the device."""

    space: SearchSpace
    cpus_per_trial: float
    device: str
    progress_board: Any = None  # a board.ProgressBoard actor, or None


def run_trial(sampled: dict[str, Any], setup: TrialSetup, data: Dataset) -> None:
    """Ray function trainable: train one sampled config for the budget's epochs per trial."""
    sweep_staging()  # what trials killed on this node left
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
        _report_with_checkpoint(metrics, state.save)

    def post_progress(i: int, n: int, _loss: float) -> None:
        if setup.progress_board is not None and (i % max(1, n // 20) == 0 or i == n - 1):
            setup.progress_board.update.remote(trial_id, epochs_reported[0] + 1, i + 1, n)

    trial_id = tune.get_context().get_trial_id()
    silence = None if setup.space.budget.silence is None else SilenceRule(**setup.space.budget.silence)
    with checkpoint_file(tune.get_checkpoint()) as resume_from:
        if resume_from is not None:
            saved = read_checkpoint(resume_from)
            epochs_reported[0] = len(saved["history"])
            _report_what_ray_lost(saved, resume_from, node_id)
        train(
            config,
            splits,
            on_epoch=report,
            on_batch=post_progress,
            resume_from=resume_from,
            silence=silence,
            network=network,
        )


def _report_with_checkpoint(metrics: dict[str, Any], write: Callable[[Path], Any]) -> None:
    """``tune.report`` with the checkpoint ``write`` puts in a temporary folder (Ray copies it into the trial's).

    A trial killed meanwhile (SIGKILL, out of memory) leaves the folder; ``sweep_staging`` removes it later."""
    with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-") as folder:
        write(Path(folder) / CHECKPOINT_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def sweep_staging(base: Path | None = None, now: float | None = None) -> int:
    """Remove the checkpoint staging folders killed trials left; returns how many were removed.

    Only this user's own folders (not links) whose process id names no running process and that are older than
    ``STAGING_STALE_S``: the age covers a process id of another PID namespace (containers or nodes sharing the
    temporary folder), as a live trial holds its folder for one report's copy only. A folder of a live trial, of
    another user or of another program is never touched. Each trial sweeps its node's temporary folder when it
    starts; nothing is swept where the platform has no user ids.
    """
    if not hasattr(os, "geteuid"):
        return 0
    uid, now = os.geteuid(), time.time() if now is None else now
    removed = 0
    for folder in (Path(tempfile.gettempdir()) if base is None else base).glob(f"{STAGING_PREFIX}*-*"):
        pid = folder.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        try:
            info = folder.lstat()
        except FileNotFoundError:
            continue
        stale = now - info.st_mtime > STAGING_STALE_S
        if not (re.fullmatch(r"[0-9]{1,9}", pid) and stat.S_ISDIR(info.st_mode) and info.st_uid == uid and stale):
            continue
        if not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += not folder.exists()
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


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


# --- checkpoints Ray Tune's saved state lost -------------------------------------------------------------------

RAY_STATE_CHECKED = "Ray 2.60"  # the layout of experiment_state-*.json that recover_lost_checkpoints reads
CHECKPOINT_DIR_NAME = "checkpoint_dir_name"  # ray.train.constants.CHECKPOINT_DIR_NAME, in each reported result
RAY_EPOCHS_FILE = "ray_epochs.json"  # beside a checkpoint that recover_lost_checkpoints renamed: the epochs Ray saw


def recover_lost_checkpoints(tune_folder: Path) -> list[str]:
    """Before ``Tuner.restore``: each unfinished trial whose checkpoint Ray's saved state names is gone is given its
    newest readable checkpoint under that name; returns those trials' ids.

    Ray Tune deletes a trial's older checkpoint as soon as it registers a newer one (``num_to_keep=1``), and saves
    its experiment state (which names each trial's checkpoint) a moment later, in a background copy: a search
    killed in between leaves a state that names a deleted checkpoint, and Ray's restore then fails that trial
    until it errors. The newer checkpoint holds more epochs than Ray saw; ``RAY_EPOCHS_FILE`` beside it tells the
    trial how many, and the trial reports the others again before it goes on (``_report_what_ray_lost``).
    Reads the state's JSON fields only (nothing is unpickled); ``verify_experiment`` has checked the file.
    """
    states = sorted(tune_folder.glob("experiment_state-*.json"), key=lambda p: p.name)
    if not states:
        return []
    try:
        trials = [_named_checkpoint(tune_folder, *entry) for entry in json.loads(states[-1].read_text())["trial_data"]]
    except (KeyError, TypeError, ValueError) as e:
        print(
            f"warning: Ray Tune's saved state no longer has the layout checked against {RAY_STATE_CHECKED} ({e!r}): "
            f"a trial whose checkpoint it lost fails as Ray has it fail",
            file=sys.stderr,
        )
        return []
    recovered = []
    for trial_id, status, folder, name, epoch in trials:
        if status == "TERMINATED" or not name or folder is None or not folder.is_dir() or (folder / name).exists():
            continue
        newer = sorted((p for p in folder.glob("checkpoint_*") if p.name > name), key=lambda p: p.name, reverse=True)
        usable = next((p for p in newer if _readable(p / CHECKPOINT_FILE)), None)
        if usable is None:
            continue  # Ray fails the trial as before: there is nothing to continue from
        usable.rename(folder / name)
        (folder / name / RAY_EPOCHS_FILE).write_text(json.dumps({"epochs": epoch}))
        for extra in newer:
            if extra.exists():
                shutil.rmtree(extra)  # beyond what Ray knows: it writes these names afresh
        recovered.append(trial_id)
    return recovered


def _named_checkpoint(
    tune_folder: Path, trial_json: str, runtime_json: str
) -> tuple[str, str, Path | None, str | None, int]:
    """(trial id, status, trial folder, the checkpoint its last result names, its epoch) from one entry of Ray Tune's
    ``trial_data``: ``Trial.get_json_state()``'s two JSON strings (Ray 2.60; ``test_lost_checkpoints.py`` checks the
    installed Ray still writes them so)."""
    trial, result = json.loads(trial_json), json.loads(runtime_json)["last_result"] or {}
    name = result.get(CHECKPOINT_DIR_NAME)
    return (
        str(trial["trial_id"]),
        trial["status"],
        tune_folder / trial["relative_logdir"] if trial["relative_logdir"] else None,  # None: not started yet
        name,
        int(result.get("epoch") or 0),
    )


def _readable(path: Path) -> bool:
    try:
        read_checkpoint(path)
    except CheckpointError:
        return False
    return True


def _report_what_ray_lost(saved: dict, resume_from: Path, node_id: str) -> None:
    """The epochs of a recovered checkpoint that Ray Tune never saw, reported again in order (the last with the
    checkpoint itself), so that Ray, ASHA and Optuna count every epoch once."""
    marker = resume_from.parent / RAY_EPOCHS_FILE
    if not marker.is_file():
        return
    seen = int(json.loads(marker.read_text())["epochs"])
    unseen = saved["history"][seen:]
    for i, record in enumerate(unseen):
        last = i == len(unseen) - 1
        metrics = {**record, DIVERGED: last and saved.get("status") == "diverged", NODE_ID: node_id}
        if not last:
            tune.report(metrics)
            continue
        _report_with_checkpoint(metrics, lambda path: shutil.copyfile(resume_from, path))
