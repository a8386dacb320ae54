"""An experiment folder as the search leaves it, read back for the report and for notebooks.

``read_experiment("results/x")`` reads only the result files named in ``tuning.experiment``
(the tables, JSON files, ``retrain/`` and the Optuna journal); a file that is missing or
unreadable becomes a line in ``missing`` instead of an error, so a half-finished or resumed
experiment still reads. Nothing here imports Ray or torch, or runs a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from .. import experiment as files


class ExperimentError(ValueError):
    """The folder is not an experiment folder at all (none of its files are there)."""


class MissingData(LookupError):
    """A figure's input is not in the experiment folder; the message says which file and why."""


@dataclass
class Experiment:
    """The result files of one search, each None when absent; ``missing`` says what is absent."""

    path: Path
    summary: dict[str, Any] | None = None
    trials: pd.DataFrame | None = None
    trial_metrics: pd.DataFrame | None = None
    best_config: dict[str, Any] | None = None
    retrain_metrics: pd.DataFrame | None = None  # every seed's epochs, with a ``seed`` column
    predictions: dict[str, np.ndarray] | None = None  # retrain/predictions.npz: labels, predicted, samples
    missing: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # the study, loaded once

    @property
    def name(self) -> str:
        return str((self.summary or {}).get("experiment") or self.path.name)

    @property
    def metric(self) -> str:
        """The metric the search tuned (summary.json; else guessed from trials.csv's columns)."""
        if self.summary and self.summary.get("metric"):
            return str(self.summary["metric"])
        if self.trials is not None and "best_val_acc" in self.trials.columns:
            return "val_acc"
        return "test_acc"

    @property
    def model(self) -> str | None:
        return (self.summary or {}).get("model") or (self.best_config or {}).get("model")

    @property
    def space(self) -> dict[str, dict[str, Any]]:
        """The searched parameters: summary.json's ``space``, else inferred from trials.csv's columns."""
        if self.summary and self.summary.get("space"):
            return dict(self.summary["space"])
        return _infer_space(self.trials)

    @property
    def best_trial_id(self) -> str | None:
        """summary.json's best trial; else the best by trials.csv (its ranking), else by trial_metrics.csv."""
        best = (self.summary or {}).get("best_trial") or {}
        if best.get("trial_id"):
            return str(best["trial_id"])
        if self.trials is not None and f"last_{self.metric}" in self.trials.columns:
            best = files.best_trial(self.trials.to_dict("records"), self.metric)
            if best is not None:
                return str(best["trial_id"])
        metrics = self.trial_metrics
        if metrics is not None and self.metric in metrics.columns and metrics[self.metric].notna().any():
            return str(metrics.loc[metrics[self.metric].idxmax(), "trial_id"])
        return None

    def study(self) -> optuna.Study:
        """The search's Optuna study, loaded from optuna.journal (read only); MissingData when absent."""
        if "study" not in self.cache:
            self.cache["study"] = _load_study(self.path / files.STUDY)
        return self.cache["study"]

    def require(self, what: str) -> Any:
        """The attribute ``what``, or MissingData naming the file it comes from."""
        value = getattr(self, what)
        if value is None or (isinstance(value, pd.DataFrame) and value.empty):
            raise MissingData(f"{_SOURCES[what]} is missing or empty in {self.path}")
        return value


_SOURCES = {
    "summary": files.SUMMARY,
    "trials": files.TRIALS,
    "trial_metrics": files.TRIAL_METRICS,
    "best_config": files.BEST_CONFIG,
    "retrain_metrics": f"{files.RETRAIN_METRICS} (the retrain of the best configuration)",
    "predictions": f"{files.PREDICTIONS} (the retrained model's test predictions)",
}


def read_experiment(path: Path | str) -> Experiment:
    """Read an experiment folder; ExperimentError if it holds none of the contract's files."""
    path = Path(path)
    if not path.is_dir():
        raise ExperimentError(f"{path}: no such folder")
    if not any((path / name).exists() for name in files.RESULT_FILES):
        raise ExperimentError(f"{path}: not an experiment folder (none of {', '.join(files.RESULT_FILES)} is there)")
    exp = Experiment(path=path)
    exp.summary = _read_json(path / files.SUMMARY, exp.missing)
    exp.best_config = _read_json(path / files.BEST_CONFIG, exp.missing)
    if exp.best_config is None and exp.summary:
        exp.best_config = (exp.summary.get("best_trial") or {}).get("config")
    exp.best_config = files.flat_config(exp.best_config)
    exp.trials = _read_csv(path / files.TRIALS, exp.missing, required=("trial_id",))
    exp.trial_metrics = _read_csv(path / files.TRIAL_METRICS, exp.missing, required=("trial_id", files.EPOCH))
    exp.retrain_metrics = _read_retrain_metrics(path / files.RETRAIN, exp.missing)
    exp.predictions = _read_predictions(path / files.PREDICTIONS, exp.missing)
    if exp.trials is not None:
        exp.trials = _normalise_trials(exp.trials, exp.metric)
    if exp.summary is not None and exp.summary.get("status") not in (None, "complete"):
        exp.missing.append(f"the search is not finished (summary.json status: {exp.summary['status']})")
    return exp


def _read_json(path: Path, missing: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        missing.append(f"{path.name} is missing")
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        missing.append(f"{path.name} is unreadable ({type(e).__name__}: {e})")
        return None
    if not isinstance(value, dict):
        missing.append(f"{path.name} does not hold a JSON object")
        return None
    return value


def _read_csv(path: Path, missing: list[str], required: tuple[str, ...]) -> pd.DataFrame | None:
    where = path.relative_to(path.parent.parent) if path.parent.name == "retrain" else path.name
    if not path.exists():
        missing.append(f"{where} is missing")
        return None
    try:
        table = pd.read_csv(path, dtype={"trial_id": str})  # Ray's ids can look like numbers
    except (OSError, ValueError) as e:  # empty file, bad quoting
        missing.append(f"{where} is unreadable ({type(e).__name__}: {e})")
        return None
    absent = [c for c in required if c not in table.columns]
    if absent:
        missing.append(f"{where} lacks the column(s) {', '.join(absent)}")
        return None
    if table.empty:
        missing.append(f"{where} has no rows yet")
    return table


def _read_retrain_metrics(folder: Path, missing: list[str]) -> pd.DataFrame | None:
    """retrain/metrics.csv, else the seeds' own metrics.csv files concatenated."""
    if (folder / "metrics.csv").exists():
        return _read_csv(folder / "metrics.csv", missing, required=("seed", "epoch"))
    per_seed = []
    for seed_dir in sorted(folder.glob("seed-*")):
        table = _read_csv(seed_dir / "metrics.csv", missing, required=("epoch",))
        seed = seed_dir.name.removeprefix("seed-")
        if table is not None and seed.isdigit():
            per_seed.append(table.assign(seed=int(seed)))
    if not per_seed:
        missing.append("retrain/ holds no metrics: the best configuration was not retrained (yet)")
        return None
    return pd.concat(per_seed, ignore_index=True)


def _read_predictions(path: Path, missing: list[str]) -> dict[str, np.ndarray] | None:
    """retrain/predictions.npz as plain arrays (``allow_pickle=False``: no object arrays, no code)."""
    if not path.exists():
        missing.append(f"{files.PREDICTIONS} is missing: the retrained model's predictions were not written (yet)")
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in ("labels", "predicted", "sample_index", "sample_images")}
    except (OSError, ValueError, KeyError, EOFError) as e:
        missing.append(f"{files.PREDICTIONS} is unreadable ({type(e).__name__}: {e})")
        return None
    if arrays["labels"].shape != arrays["predicted"].shape:
        missing.append(f"{files.PREDICTIONS}: labels and predictions differ in length")
        return None
    return arrays


def _load_study(journal: Path) -> optuna.Study:
    """The one study in the journal, loaded without writing to the folder."""
    if not journal.is_file():
        raise MissingData(f"{files.STUDY} is missing: the search's Optuna study is not there")
    try:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
        names = optuna.get_all_study_names(storage)
        if len(names) != 1:
            raise MissingData(f"{files.STUDY} holds {len(names)} studies, expected one")
        return optuna.load_study(study_name=names[0], storage=storage)
    except MissingData:
        raise
    except Exception as e:  # a damaged journal
        raise MissingData(f"{files.STUDY} is unreadable ({type(e).__name__}: {e})") from None


def _normalise_trials(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """trials.csv with booleans as bools and the metric columns as floats, whatever pandas guessed."""
    trials = trials.copy()
    trials["trial_id"] = trials["trial_id"].astype(str)
    for column in ("stopped_early", "diverged", files.SILENT, files.SEED_TRIAL):
        if column in trials.columns:
            trials[column] = trials[column].map(_as_bool)
        else:
            trials[column] = False
    if "status" not in trials.columns:
        trials["status"] = "TERMINATED"
    for column in (f"best_{metric}", f"last_{metric}", "best_test_acc", "last_test_acc", "epochs"):
        if column in trials.columns:
            trials[column] = pd.to_numeric(trials[column], errors="coerce")
    return trials


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def _infer_space(trials: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """A space guessed from trials.csv's ``config/`` columns (bounds = what was sampled, no log scale)."""
    if trials is None:
        return {}
    space = {}
    for column in trials.columns:
        if not column.startswith("config/"):
            continue
        values = trials[column].dropna()
        name = column.removeprefix("config/")
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and len(values):
            kind = "int" if pd.api.types.is_integer_dtype(values) else "float"
            space[name] = {"type": kind, "low": values.min().item(), "high": values.max().item(), "log": False}
        else:
            space[name] = {"type": "categorical", "choices": sorted(values.astype(str).unique().tolist())}
    return space


def searched_values(exp: Experiment) -> pd.DataFrame:
    """One row per trial: trial_id, status flags, the metric, and one column per searched parameter."""
    trials = exp.require("trials")
    metric = f"best_{exp.metric}"
    columns = {"trial_id": trials["trial_id"], "status": trials["status"],
               "stopped_early": trials["stopped_early"], "diverged": trials["diverged"],
               "result": trials[metric] if metric in trials.columns else float("nan")}
    for name in exp.space:
        if f"config/{name}" in trials.columns:
            columns[name] = trials[f"config/{name}"]
    return pd.DataFrame(columns)
