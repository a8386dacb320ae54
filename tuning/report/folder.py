"""An experiment folder as the search leaves it, read back for the report and for notebooks.

``read_experiment("results/x")`` reads only the result files named in ``tuning.experiment``
(the tables, JSON files, ``retrain/`` and the Optuna journal); a file that is missing or
unreadable becomes a line in ``missing`` instead of an error, so a half-finished or resumed
experiment still reads. Nothing here imports Ray or torch, or runs a model.

The folder may come from someone else, so what is read is held to the layout the search
writes before anything uses it: each file's size is bounded (and an array's declared size is
checked before it is loaded), a summary.json field of the wrong type is left out with a note,
and the tables' numeric columns hold numbers or nothing.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from .. import experiment as files

MAX_JSON_BYTES = 16 << 20  # summary.json and best_config.json: a few kB from a search
MAX_TABLE_BYTES = 512 << 20  # a CSV table: trial_metrics.csv of 10,000 trials x 100 epochs is about 200 MB
MAX_PREDICTION_BYTES = 256 << 20  # retrain/predictions.npz's arrays, uncompressed (MNIST's test set: 0.1 MB)
PREDICTION_ARRAYS = {  # name in predictions.npz -> (numpy dtype kinds allowed, dimensions)
    "labels": ("iu", 1),
    "predicted": ("iu", 1),
    "sample_index": ("iu", 1),
    "sample_images": ("iuf", 3),
}
CLASSES = 10  # the digits


NO_EPOCH_YET = "no trial has finished an epoch yet"


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
        model = (self.summary or {}).get("model") or (self.best_config or {}).get("model")
        return model if isinstance(model, str) else None

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
        if isinstance(value, pd.DataFrame) and value.empty and what in ("trials", "trial_metrics"):
            raise MissingData(NO_EPOCH_YET)
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
    if exp.summary is not None:
        exp.summary = checked_summary(exp.summary, exp.missing)
    exp.best_config = _read_json(path / files.BEST_CONFIG, exp.missing)
    if exp.best_config is None and exp.summary:
        exp.best_config = (exp.summary.get("best_trial") or {}).get("config")
    exp.best_config = files.flat_config(exp.best_config)
    exp.trials = _read_csv(path / files.TRIALS, exp.missing, required=("trial_id",))
    exp.trial_metrics = _numeric(
        _read_csv(path / files.TRIAL_METRICS, exp.missing, required=("trial_id", files.EPOCH)),
        files.TRIAL_METRICS,
        (files.EPOCH,),
        exp.missing,
    )
    exp.retrain_metrics = _numeric(
        _read_retrain_metrics(path / files.RETRAIN, exp.missing),
        files.RETRAIN_METRICS,
        ("seed", files.EPOCH),
        exp.missing,
    )
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
        _check_size(path, MAX_JSON_BYTES)
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        missing.append(f"{path.name} is unreadable ({type(e).__name__}: {_first_line(e)})")
        return None
    except RecursionError:
        missing.append(f"{path.name} is unreadable (nested deeper than Python can read)")
        return None
    if not isinstance(value, dict):
        missing.append(f"{path.name} does not hold a JSON object")
        return None
    return value


def checked_summary(summary: dict[str, Any], missing: list[str]) -> dict[str, Any]:
    """summary.json without the fields the report reads that are not of the type the search writes.

    Each field left out is a line in ``missing`` ("summary.json: wall_seconds is 'soon', not a
    finite number of seconds; not shown"); the report then shows what it can from the other files.
    """
    checked = {}
    for key, value in summary.items():
        rule = _SUMMARY_RULES.get(key)
        problem = rule(value) if rule else None
        if problem:
            missing.append(f"{files.SUMMARY}: {key} is {_shown(value)}, not {problem}; not shown")
        else:
            checked[key] = value
    return checked


def _shown(value: Any) -> str:
    """A value for a note: its repr, cut short (a crafted field can be long)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _is_number(value: Any, finite: bool = True) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (not finite or math.isfinite(value))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "text"


def _mapping_of(check, what: str):
    def rule(value: Any) -> str | None:
        ok = isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())
        return None if ok else what

    return rule


def _space_spec(spec: Any) -> bool:
    """One searched parameter as summary.json's space describes it (SearchSpace.describe)."""
    if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
        return False
    cases = spec.get("cases")
    if cases is not None and not (
        isinstance(spec.get("by"), str)
        and isinstance(cases, dict)
        and all(
            isinstance(k, str) and _space_spec(c) and not {"when", "by", "cases"} & c.keys() for k, c in cases.items()
        )
    ):
        return False
    when = spec.get("when")
    if when is not None and not (
        isinstance(when, dict)
        and all(isinstance(k, str) and isinstance(v, list) and all(_is_scalar(c) for c in v) for k, v in when.items())
    ):
        return False
    if spec["type"] == "categorical":
        return isinstance(spec.get("choices"), list) and all(_is_scalar(c) for c in spec["choices"])
    return (
        _is_number(spec.get("low"))
        and _is_number(spec.get("high"))
        and spec["low"] <= spec["high"]
        and isinstance(spec.get("log", False), bool)
    )


def _best_trial(value: Any) -> str | None:
    ok = value is None or (
        isinstance(value, dict)
        and isinstance(value.get("trial_id"), (str, int, type(None)))
        and not isinstance(value.get("trial_id"), bool)
        and (value.get("metric_value") is None or _is_number(value["metric_value"], finite=False))
        and (value.get("config") is None or isinstance(value["config"], dict))
        and (value.get("network") is None or isinstance(value["network"], str))
    )
    return None if ok else "a trial_id with its metric_value (a number), config (a mapping) and network (text)"


def _retrain(value: Any) -> str | None:
    if value is None:
        return None
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("seeds"), list)
        and value["seeds"]
        and all(isinstance(s, int) and not isinstance(s, bool) for s in value["seeds"])
        and (
            value.get("epochs") is None or (isinstance(value["epochs"], int) and not isinstance(value["epochs"], bool))
        )
        and all(
            _is_number(value.get(f"{kind}_test_acc_{stat}"), finite=False)
            or value.get(f"{kind}_test_acc_{stat}") is None
            for kind in ("max", "final")
            for stat in ("mean", "std")
        )
    )
    return None if ok else "the retrain's seeds (integers), epochs and accuracies (numbers)"


def _pareto_retrain(value: Any) -> str | None:
    ok = value is None or (
        isinstance(value, list)
        and all(isinstance(p, dict) and isinstance(p.get("trial_id"), (str, int)) for p in value)
    )
    return None if ok else "a list of retrained points with their trial_id"


_SUMMARY_RULES = {  # the fields of summary.json the report reads -> the rule of each (None: it holds)
    "experiment": _text,
    "model": _text,
    "dataset": _text,
    "metric": _text,
    "status": _text,
    "git_commit": lambda v: None if v is None or isinstance(v, str) else "text",
    "wall_seconds": lambda v: None if _is_number(v) and v >= 0 else "a finite number of seconds",
    "trials": _mapping_of(lambda v: _is_number(v) and v >= 0, "counts of trials (numbers)"),
    "budget": _mapping_of(lambda v: _is_number(v) or v is None or isinstance(v, dict), "a budget of numbers"),
    "space": _mapping_of(_space_spec, "searched parameters with their type and range or choices"),
    "fixed": _mapping_of(_is_scalar, "fixed values (numbers, text, booleans)"),
    "versions": _mapping_of(lambda v: isinstance(v, str), "package versions (text)"),
    "best_trial": _best_trial,
    "seed_trial": _best_trial,
    "retrain": _retrain,
    "pareto_retrain": _pareto_retrain,
}


def _read_csv(path: Path, missing: list[str], required: tuple[str, ...]) -> pd.DataFrame | None:
    where = path.relative_to(path.parent.parent) if path.parent.name == "retrain" else path.name
    if not path.exists():
        missing.append(f"{where} is missing")
        return None
    try:
        _check_size(path, MAX_TABLE_BYTES)
        table = pd.read_csv(path, dtype={"trial_id": str})  # Ray's ids can look like numbers
    except pd.errors.EmptyDataError:  # not even a header: a search stopped before its first trial wrote anything
        missing.append(f"{where} is empty: {NO_EPOCH_YET}")
        return None
    except (OSError, ValueError) as e:  # bad quoting, too large
        missing.append(f"{where} is unreadable ({type(e).__name__}: {_first_line(e)})")
        return None
    absent = [c for c in required if c not in table.columns]
    if absent:
        missing.append(f"{where} lacks the column(s) {', '.join(absent)}")
        return None
    if table.empty:
        missing.append(
            f"{where} has no rows yet: {NO_EPOCH_YET}"
            if path.name in (files.TRIALS, files.TRIAL_METRICS)
            else f"{where} has no rows yet"
        )
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
    """retrain/predictions.npz as plain arrays of the layout the retrain writes; a note in ``missing`` otherwise.

    ``allow_pickle=False``: no object arrays, no code. Each array's dtype and shape are read from
    its .npy header, and its size from the zip directory, before any of it is loaded, so a header
    that claims 10^12 elements or a small file that expands to gigabytes is refused unread.
    """
    if not path.exists():
        missing.append(f"{files.PREDICTIONS} is missing: the retrained model's predictions were not written (yet)")
        return None
    try:
        arrays = _load_npz(path)
        _check_predictions(arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        missing.append(f"{files.PREDICTIONS} is unreadable ({type(e).__name__}: {_first_line(e)})")
        return None
    return arrays


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """PREDICTION_ARRAYS from an .npz, each checked against its header and MAX_PREDICTION_BYTES before loading."""
    _check_size(path, MAX_PREDICTION_BYTES)  # the zip directory is read whole
    arrays, total = {}, 0
    with zipfile.ZipFile(path) as archive:
        for name, (kinds, dims) in PREDICTION_ARRAYS.items():
            info = archive.getinfo(f"{name}.npy")  # KeyError names the array that is missing
            total += info.file_size
            if total > MAX_PREDICTION_BYTES:
                raise ValueError(f"its arrays expand to more than {MAX_PREDICTION_BYTES:,} bytes")
            with archive.open(info) as member:
                shape, dtype = _npy_header(member, name)
                header_bytes = member.tell()
            count = math.prod(shape)
            if dtype.hasobject or dtype.kind not in kinds or len(shape) != dims:
                raise ValueError(
                    f"{name} is {dims}-D of kind {kinds!r} in the retrain's layout, "
                    f"its header declares {dtype} of shape {shape}"
                )
            if count * dtype.itemsize != info.file_size - header_bytes:
                raise ValueError(
                    f"{name}'s header declares {count:,} values of {dtype.itemsize} bytes, "
                    f"but the file holds {info.file_size - header_bytes:,} bytes"
                )
            with archive.open(info) as member:
                arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def _npy_header(member, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an .npy header declares (numpy's own reader of the header alone)."""
    version = np.lib.format.read_magic(member)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"{name} is in .npy format {version[0]}.{version[1]}, not 1.0 or 2.0")
    shape, _, dtype = readers[version](member)
    return shape, dtype


def _check_predictions(arrays: dict[str, np.ndarray]) -> None:
    """Labels and predictions of the same test images, digits in [0, 9], samples among those images."""
    labels, predicted, index = arrays["labels"], arrays["predicted"], arrays["sample_index"]
    if labels.shape != predicted.shape:
        raise ValueError("labels and predictions differ in length")
    for name in ("labels", "predicted"):
        if arrays[name].size and not (0 <= arrays[name].min() and arrays[name].max() < CLASSES):
            raise ValueError(f"{name} holds values outside the digits 0-9")
    if index.size and not (0 <= index.min() and index.max() < len(labels)):
        raise ValueError("sample_index points outside the test images")
    if len(arrays["sample_images"]) != len(index):
        raise ValueError("sample_images and sample_index differ in length")


def _check_size(path: Path, limit: int) -> None:
    if path.stat().st_size > limit:
        raise ValueError(f"{path.stat().st_size:,} bytes, more than the {limit:,} a search writes")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else ""


def _numeric(table: pd.DataFrame | None, where: str, keys: tuple[str, ...], missing: list[str]) -> pd.DataFrame | None:
    """A metrics table whose columns but trial_id hold numbers (text becomes NaN); rows without their keys dropped."""
    if table is None:
        return None
    table = table.copy()
    for column in table.columns:
        if column != "trial_id" and table[column].dtype == object:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    keyless = table[list(keys)].isna().any(axis=1)
    if keyless.any():
        missing.append(f"{where}: {int(keyless.sum())} row(s) without a number in {' or '.join(keys)} left out")
        table = table[~keyless]
    if "trial_id" in table.columns:
        table["trial_id"] = table["trial_id"].astype(str)
    return table


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
    columns = {
        "trial_id": trials["trial_id"],
        "status": trials["status"],
        "stopped_early": trials["stopped_early"],
        "diverged": trials["diverged"],
        "result": trials[metric] if metric in trials.columns else float("nan"),
    }
    for name in exp.space:
        if f"config/{name}" in trials.columns:
            columns[name] = trials[f"config/{name}"]
    return pd.DataFrame(columns)
