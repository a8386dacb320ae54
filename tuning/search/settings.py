"""A search's settings besides its space, and the checks of a resource request made before Ray starts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from snn.errors import SnnTuneError


class InputError(SnnTuneError, ValueError):
    """A flag or a saved search that breaks a rule; the message names the flag or file and the rule."""


class ResourceError(SnnTuneError, ValueError):
    """A resource request no node can satisfy."""


class ClusterError(SnnTuneError, RuntimeError):
    """Ray could not be started, or the cluster of --address did not answer in time."""


@dataclass(frozen=True)
class Settings:
    """Everything a search needs besides the space; saved so --resume continues alike."""

    model: str
    metric: str
    seed: int
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int
    max_failures: int
    retrain_seeds: int
    retrain: bool
    device: str
    seed_trial: bool = True  # the seed's configuration is trial 0
    sampler: str = "tpe"  # tpe | random (the baseline of benchmarks/search_quality.py)
    time_budget_s: float | None = None  # no new trials after this many seconds of searching
    loggers: tuple[str, ...] = ()  # mlflow, tensorboard: Ray Tune's logger callbacks
    cost: str | None = None  # synops | spikes: the second objective (tuning.experiment.OBJECTIVES), or none
    select: str = "max-accuracy"  # which point of the Pareto front is retrained (tuning.experiment.select)
    retrain_pareto: int = 0  # also retrain this many points spread along the Pareto front


def check_resource_request(cpus: float, gpus: float) -> None:
    """Reject requests no machine can satisfy, before Ray starts."""
    if not (math.isfinite(cpus) and cpus > 0):
        raise ResourceError(f"--cpus-per-trial must be a number > 0, got {cpus:g}")
    if not (math.isfinite(gpus) and gpus >= 0):
        raise ResourceError(f"--gpus-per-trial must be a number >= 0, got {gpus:g}")
    if gpus > 1 and not float(gpus).is_integer():
        raise ResourceError(f"--gpus-per-trial above 1 must be a whole number of GPUs, got {gpus:g}")


def check_local_gpus(gpus: float, device: str) -> None:
    """A local Ray instance has this machine's GPUs and no more."""
    import torch

    available = torch.cuda.device_count()
    if device == "cuda" and available == 0:
        raise ResourceError("--device cuda cannot be met: this machine has no GPU")
    if gpus > available:
        have = "no GPU" if available == 0 else f"{available} GPU(s)"
        raise ResourceError(f"--gpus-per-trial {gpus:g} cannot be met: this machine has {have}")
