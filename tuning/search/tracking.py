"""``--logger mlflow``: Ray Tune's MLflow callback, writing into the experiment folder being run.

Ray pickles the callbacks with the Tuner, so a callback that held the tracking store's path
would, after a resume of a copied or moved experiment, write into the original's. This one
takes the folder of the search that runs it (``searcher.experiment_being_run``) when it starts.
"""

from __future__ import annotations

from pathlib import Path

from ray.air.integrations.mlflow import MLflowLoggerCallback

from .. import experiment as files
from .searcher import experiment_being_run


class ExperimentMLflowCallback(MLflowLoggerCallback):
    """MLflowLoggerCallback with one run per trial in ``<experiment>/mlflow.db`` (MLflow's SQLite store)."""

    def __init__(self, experiment: Path):
        super().__init__(tracking_uri=self.uri(experiment), experiment_name=experiment.name)

    @staticmethod
    def uri(experiment: Path) -> str:
        return f"sqlite:///{experiment / files.MLFLOW}"

    def setup(self, *args, **kwargs):
        experiment = experiment_being_run()
        if experiment is not None:
            self.tracking_uri = self.uri(experiment)
        super().setup(*args, **kwargs)
