"""A search's settings besides its space, and the error for resource requests no node can meet."""

from __future__ import annotations

from dataclasses import dataclass


class ResourceError(ValueError):
    """A resource request no node can satisfy."""


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
