"""What a search will cost, said before it starts: trial-epochs at most, and a time estimate.

The estimate times a few training batches of the seed's configuration (trial 0), run by the
one trainer on this machine with one trial's threads, scales them to an epoch (plus an
evaluation at a third of the training cost per image), and multiplies by the most trial-epochs ASHA can run and by the retrain's epochs.
It is an upper bound for the search (ASHA stops most trials early) and a rough one: other
configurations in the space are faster or slower than the seed's.
"""

from __future__ import annotations

import threading
import time

import torch

from snn.config import RunConfig
from snn.data import Dataset, make_splits
from snn.training import train

from .settings import Settings
from .space import SearchSpace

_TIMED_BATCHES = 3
_HOUR = 3600.0


class Stopped(Exception):
    """The estimate was told to stop before it finished (the search failed first)."""


def seed_epoch_seconds(
    space: SearchSpace, settings: Settings, data: Dataset, stop: threading.Event | None = None
) -> float:
    """Seconds for one epoch of the seed's configuration (trial 0) here, from a few timed batches.

    Raises ``Stopped`` at the next batch once ``stop`` is set (it may run in a thread).
    """
    config = space.config_for(space.first_point(), device=settings.device, epochs=1)
    return _epoch_seconds(config, data, settings.cpus_per_trial, stop, space.net)


def estimate(space: SearchSpace, settings: Settings, epoch_s: float, concurrency: int) -> str:
    """Lines telling the budget and how long it may take here (``epoch_s``: ``seed_epoch_seconds``);
    a warning when that is hours on a CPU."""
    trial_epochs = space.budget.trials * space.budget.epochs_per_trial
    search_s = trial_epochs * epoch_s / max(1, concurrency)
    retrain_s = space.budget.retrain_epochs * settings.retrain_seeds * epoch_s if settings.retrain else 0.0
    lines = [
        f"budget: at most {trial_epochs} trial-epochs ({space.budget.trials} trials x up to "
        f"{space.budget.epochs_per_trial} epochs, {concurrency} at once), then "
        + (
            f"a retrain of {space.budget.retrain_epochs} epochs x {settings.retrain_seeds} seed(s)"
            if settings.retrain
            else "no retrain"
        ),
        f"estimate: one epoch of the seed's configuration takes ~{_duration(epoch_s)} here "
        f"({_TIMED_BATCHES} batches timed), so the search takes up to ~{_duration(search_s)}"
        + (f" and the retrain ~{_duration(retrain_s)}" if retrain_s else ""),
    ]
    if settings.time_budget_s:
        lines.append(f"the time budget stops the search after {_duration(settings.time_budget_s)}")
    if not torch.cuda.is_available() and search_s + retrain_s > _HOUR:
        lines.append(
            f"warning: this machine has no GPU and this budget takes hours here; faster: "
            f"--time-budget 30m, --space {space.model}-cpu (where there is one), "
            f"fewer --trials or --retrain-epochs, or --preset smoke"
        )
    return "\n".join(lines)


def _epoch_seconds(
    config: RunConfig, data: Dataset, cpus: float, stop: threading.Event | None = None, network=None
) -> float:
    """Seconds for one epoch of ``config`` on this machine's CPU or GPU, from a few batches of the trainer."""
    splits = make_splits(data, config)
    probe = config.replace(
        epochs=1, val_size=0, limit_train=(_TIMED_BATCHES + 1) * config.batch_size, limit_test=config.batch_size
    )
    stamps: list[float] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus)))
    try:
        start = time.perf_counter()
        train(probe, make_splits(data, probe), on_batch=lambda *_: _stamp(stamps, stop), silence=None, network=network)
    finally:
        torch.set_num_threads(threads)
    gaps = [b - a for a, b in zip([start, *stamps], stamps)]  # seconds per batch
    per_batch = min(gaps[1:] or gaps)  # the first batch warms up
    evaluated = len(splits.test) + (len(splits.val) if splits.val is not None else 0)
    return per_batch / config.batch_size * (len(splits.train) + evaluated / 3)  # evaluation: about a third


def _stamp(stamps: list[float], stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Stopped
    stamps.append(time.perf_counter())


def _duration(seconds: float) -> str:
    if seconds >= _HOUR:
        return f"{seconds / _HOUR:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
