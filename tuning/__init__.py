"""Hyperparameter search for the ``snn`` networks, in two parts over one folder layout.

* ``tuning.search``: everything that needs Ray (``python -m tuning.search``).
* ``tuning.report``: the report, from result files alone (``python -m tuning.report``).
* ``tuning.experiment``: the experiment folder's file names, columns and derived counts, which
  both parts import (no Ray, no torch).

``tuning.load_network(experiment, seed=None)`` loads an experiment's retrained best network for
inference, with its config.
"""


def load_network(experiment, seed: int | None = None):
    """The retrained best network of an experiment folder (its retrain seed ``seed``, default the first),
    in eval mode on the CPU, and its RunConfig: ``model, config = load_network("results/csnn-...")``."""
    from pathlib import Path

    from snn.export import load_run, run_folder_of

    return load_run(run_folder_of(Path(experiment), seed))
