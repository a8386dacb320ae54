"""Spiking networks for MNIST: the seed's FC-SNN and CSNN, their data, one trainer, one evaluator.

The trainer is ``snn.training.train``: ``snn.train`` is the command-line module
(``python -m snn.train``), and a package attribute of that name would be replaced by the
module as soon as anything imports it.
"""

from .checkpoint import CheckpointError, read_checkpoint
from .config import SEED_DEFAULTS, ConfigError, RunConfig
from .data import DataError, Dataset, Split, default_data_dir, make_splits, read_dataset
from .models import CSNN, FCSNN, build_model, poisson_encode, record_firing_rates
from .training import History, evaluate, predict

__all__ = [
    "CSNN", "FCSNN", "SEED_DEFAULTS", "CheckpointError", "ConfigError", "DataError", "Dataset", "History",
    "RunConfig", "Split", "build_model", "default_data_dir", "evaluate", "make_splits", "poisson_encode",
    "predict", "read_checkpoint", "read_dataset", "record_firing_rates",
]
