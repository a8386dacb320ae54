"""A search's settings besides its space, and the checks of a resource request made before Ray starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from snn.config import MAX_SEED, MODELS, is_reference
from snn.errors import SnnTuneError

from .. import experiment as files

METRICS = ("test_acc", "val_acc")
SAMPLERS = ("tpe", "random")
DEVICES = ("auto", "cpu", "cuda")
LOGGERS = ("mlflow", "tensorboard")
SELECTIONS = ("max-accuracy", "knee")  # besides the rules files.parse_selection reads


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

    def __post_init__(self) -> None:
        """The rules of each field, whether it came from the flags or from a saved search.json."""
        if isinstance(self.loggers, list):  # as JSON keeps a tuple
            object.__setattr__(self, "loggers", tuple(self.loggers))
        for f in fields(self):
            rule = _RULES[f.name](getattr(self, f.name))
            if rule:
                raise InputError(f"{f.name}: {rule}, got {getattr(self, f.name)!r}")
        if self.retrain_pareto and not self.cost:
            raise InputError(
                f"retrain_pareto: needs a second objective (cost), got retrain_pareto="
                f"{self.retrain_pareto} with cost={self.cost!r}"
            )


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _one_of(choices: tuple) -> Any:
    return lambda v: None if isinstance(v, str) and v in choices else f"must be one of {', '.join(choices)}"


def _selection(value: Any) -> str | None:
    if isinstance(value, str) and value in SELECTIONS:
        return None
    try:
        files.parse_selection(value)
    except (ValueError, AttributeError, TypeError):
        return f"must be {', '.join(SELECTIONS)} or a rule like accuracy>=0.99 or synops<=N"
    return None


_RULES = {  # field -> the rule its value breaks, or None
    "model": lambda v: (
        None if v in MODELS or is_reference(v) else f"must be one of {', '.join(MODELS)} or package.module:function"
    ),
    "metric": _one_of(METRICS),
    "seed": lambda v: None if _integer(v) and 0 <= v <= MAX_SEED else "must be an integer in [0, 2**32 - 1]",
    "cpus_per_trial": lambda v: None if _number(v) and v > 0 else "must be a finite number > 0",
    "gpus_per_trial": lambda v: (
        None
        if _number(v) and v >= 0 and (v <= 1 or float(v).is_integer())
        else "must be a finite number >= 0, a whole number above 1"
    ),
    "max_concurrent": lambda v: None if _integer(v) and v >= 0 else "must be an integer >= 0",
    "max_failures": lambda v: None if _integer(v) and v >= 0 else "must be an integer >= 0",
    "retrain_seeds": lambda v: None if _integer(v) and v >= 1 else "must be an integer >= 1",
    "retrain": lambda v: None if isinstance(v, bool) else "must be true or false",
    "device": _one_of(DEVICES),
    "seed_trial": lambda v: None if isinstance(v, bool) else "must be true or false",
    "sampler": _one_of(SAMPLERS),
    "time_budget_s": lambda v: (
        None if v is None or (_number(v) and v > 0) else "must be a number of seconds > 0 or null"
    ),
    "loggers": lambda v: (
        None
        if isinstance(v, tuple) and all(isinstance(x, str) and x in LOGGERS for x in v)
        else f"must be a list of {', '.join(LOGGERS)}"
    ),
    "cost": lambda v: (
        None
        if v is None or (isinstance(v, str) and v in files.OBJECTIVES and v != "accuracy")
        else "must be null, synops or spikes"
    ),
    "select": _selection,
    "retrain_pareto": lambda v: None if _integer(v) and v >= 0 else "must be an integer >= 0",
}


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
