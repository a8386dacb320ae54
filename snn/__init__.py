"""Spiking networks: the seed's FC-SNN and CSNN families, any spikingjelly network of yours, image data,
one trainer, one evaluator.

``import snn`` is light: the names below load their module (and torch) on first use, so a
program that only needs ``snn.RunConfig`` does not pay for torch and spikingjelly. The
trainer is ``snn.training.train``: ``snn.train`` is the command-line module
(``python -m snn.train``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import SEED_DEFAULTS, ConfigError, RunConfig

_LAZY = {
    "CheckpointError": "checkpoint",
    "History": "checkpoint",
    "read_checkpoint": "checkpoint",
    "DataError": "data",
    "Dataset": "data",
    "Split": "data",
    "as_dataset": "data",
    "default_data_dir": "data",
    "make_splits": "data",
    "read_dataset": "data",
    "CSNN": "models",
    "FCSNN": "models",
    "csnn": "models",
    "fc_snn": "models",
    "PoissonLinear": "layers",
    "poisson_encode": "layers",
    "Network": "networks",
    "NetworkError": "networks",
    "build_model": "networks",
    "resolve": "networks",
    "record_activity": "spikes",
    "record_firing_rates": "spikes",
    "evaluate": "training",
    "predict": "training",
}

__all__ = ["SEED_DEFAULTS", "ConfigError", "RunConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'snn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
