"""The experiment folder: its file names, its columns and the figures derived from them.

The search (``tuning.search``) writes an experiment folder and the report (``tuning.report``)
reads it; both take every name and every derived count from here, so the folder's layout is
written down once. This module imports neither Ray nor torch (nor pandas): the records it
works on are plain dicts, as they stand in the CSV and JSON files.

    RESULTS/NAME/
      search.json          the space and settings a --resume continues with
      tune/                the Ray Tune experiment (checkpoints of the trials)
      optuna.journal       the Optuna study (JournalFileBackend)
      trials.csv           one row per trial (TRIAL_COLUMNS, then config/<param>)
      trial_metrics.csv    one row per trial and epoch: trial_id and the trainer's record
      best_config.json     the RunConfig the retrain trains
      retrain/seed-<s>/    config.json, metrics.csv, checkpoint.pt of each retrain seed
      retrain/metrics.csv  every seed's epochs, with a seed column
      retrain/predictions.npz  the retrained model's test predictions (for the report)
      summary.json         counts, the best trial, the retrain's figures, versions
      report.html          the report
      mlflow.db            with --logger mlflow: the MLflow tracking store, one run per trial
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from statistics import mean, pstdev
from typing import Any

STATE = "search.json"
TUNE = "tune"
STUDY = "optuna.journal"
TRIALS = "trials.csv"
TRIAL_METRICS = "trial_metrics.csv"
BEST_CONFIG = "best_config.json"
RETRAIN = "retrain"
RETRAIN_METRICS = f"{RETRAIN}/metrics.csv"
PREDICTIONS = f"{RETRAIN}/predictions.npz"
SUMMARY = "summary.json"
PARETO = "pareto.csv"  # --objective accuracy,synops|spikes: the finished trials on the Pareto front
PARETO_RETRAIN = "retrain-pareto"  # --retrain-pareto K: <trial_id>/retrain/seed-<s>/ of each point retrained
REPORT = "report.html"
MLFLOW = "mlflow.db"  # --logger mlflow: the MLflow tracking store (SQLite)
# The files a report is built from; a folder with none of them is not an experiment.
RESULT_FILES = (SUMMARY, TRIALS, TRIAL_METRICS, BEST_CONFIG, RETRAIN)

# What every trial reports each epoch besides the trainer's record.
EPOCH = "epoch"  # the time attribute ASHA counts in
DIVERGED = "diverged"  # true in the record of the epoch whose loss or weights turned NaN
SILENT = "silent"  # true in the record of the epoch in which the network was found silent
NODE_ID = "node_id"  # the Ray node the trial ran on
CONFIG_PREFIX = "config/"  # trials.csv's columns of the sampled values
RAY_TRIAL_ID = "ray_trial_id"  # the user attribute of each Optuna trial that names its Ray trial
SEED_TRIAL = "seed_trial"  # trials.csv: true for the trial that ran the seed's configuration
NETWORK = "network"  # trials.csv: the trial's network in words ("784-800-10, LIF tau 2, T 25, poisson input")

# Ray's trial statuses; a finished trial is one of FINISHED.
TERMINATED, ERROR = "TERMINATED", "ERROR"
FINISHED = (TERMINATED, ERROR)


# What a search can optimise besides accuracy: the evaluator's per-image spike costs (snn.spikes).
OBJECTIVES = {"accuracy": "acc", "synops": "synops_per_image", "spikes": "spikes_per_image"}
COSTS = ("synops_per_image", "spikes_per_image", "energy_estimate_uj")  # trials.csv keeps their last values


def objective_metric(objective: str, metric: str) -> str:
    """The record key of an objective on the split ``metric`` is measured on: ("synops", "val_acc") -> val_synops_per_image."""
    return f"{metric.split('_', 1)[0]}_{OBJECTIVES[objective]}"


def retrain_folder(seed: int) -> str:
    """The run folder of one retrain seed, relative to the experiment folder."""
    return f"{RETRAIN}/seed-{seed}"


def trial_row(
    trial_id: str,
    status: str,
    config: Mapping[str, Any],
    history: list[dict[str, Any]],
    metric: str,
    max_epochs: int,
    seed_trial: bool = False,
    network: str | None = None,
) -> dict[str, Any]:
    """One row of trials.csv: how the trial ended, its best and last figures, its sampled values.

    ``last_<metric>`` (the metric at the last epoch the trial ran) is what ranks trials;
    ``best_<metric>`` (the maximum over its epochs) is kept beside it.
    """
    epochs = max((int(r[EPOCH]) for r in history if _number(r.get(EPOCH)) is not None), default=0)
    diverged = any(_flag(r.get(DIVERGED)) for r in history)
    silent = any(_flag(r.get(SILENT)) for r in history)
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "status": status,
        "stopped_early": status == TERMINATED and not diverged and not silent and epochs < max_epochs,
        "diverged": diverged,
        SILENT: silent,
        "epochs": epochs,
        SEED_TRIAL: seed_trial,
    }
    if network is not None:
        row[NETWORK] = network
    for name in dict.fromkeys([metric, "test_acc"]):
        values = [v for v in (_number(r.get(name)) for r in history) if v is not None]
        row[f"best_{name}"] = max(values) if values else math.nan
        row[f"last_{name}"] = values[-1] if values else math.nan
    for split in dict.fromkeys([metric.split("_", 1)[0], "test"]):
        for cost in COSTS:
            values = [v for v in (_number(r.get(f"{split}_{cost}")) for r in history) if v is not None]
            if values:
                row[f"last_{split}_{cost}"] = values[-1]
    nodes = [r[NODE_ID] for r in history if r.get(NODE_ID)]
    if nodes:
        row[NODE_ID] = nodes[-1]
    row.update({f"{CONFIG_PREFIX}{k}": v for k, v in config.items()})
    return row


def flat_config(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A RunConfig as JSON holds it (the network's parameters under ``net``) as one flat mapping."""
    if not isinstance(config, Mapping):
        return None if config is None else config
    net = config.get("net")
    flat = {k: v for k, v in config.items() if k != "net"}
    return {**flat, **net} if isinstance(net, Mapping) else flat


def sampled_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """The sampled hyperparameters of a trials.csv row, without the ``config/`` prefix."""
    return {k.removeprefix(CONFIG_PREFIX): v for k, v in row.items() if k.startswith(CONFIG_PREFIX)}


def trial_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many trials ran to their last epoch, were stopped early, errored, diverged, are unfinished."""
    rows = list(rows)
    stopped = [_flag(r.get("stopped_early")) for r in rows]
    diverged = [_flag(r.get("diverged")) for r in rows]
    silent = [_flag(r.get(SILENT)) for r in rows]
    return {
        "total": len(rows),
        "completed": sum(
            r.get("status") == TERMINATED and not (s or d or q)
            for r, s, d, q in zip(rows, stopped, diverged, silent, strict=True)
        ),
        "stopped_early": sum(stopped),
        "errored": sum(r.get("status") == ERROR for r in rows),
        "diverged": sum(diverged),
        SILENT: sum(silent),
        "unfinished": sum(r.get("status") not in FINISHED for r in rows),
    }


def ran_to_the_end(row: Mapping[str, Any]) -> bool:
    """Whether a trial ran all its epochs (not stopped by ASHA, not diverged, silent or errored)."""
    return (
        row.get("status") == TERMINATED
        and not _flag(row.get("stopped_early"))
        and not _flag(row.get("diverged"))
        and not _flag(row.get(SILENT))
    )


def best_trial(rows: Iterable[Mapping[str, Any]], metric: str) -> Mapping[str, Any] | None:
    """The best trial: the highest metric at its last epoch, among the trials that ran to the end if any did.

    Ranking by the last epoch rather than the maximum over epochs does not reward one lucky
    epoch, and it is the figure the trial's configuration delivers when trained that long.
    """
    rows = list(rows)
    scored = [r for r in rows if _number(r.get(f"last_{metric}")) is not None]
    finished = [r for r in scored if ran_to_the_end(r)]
    pool = finished or scored
    return max(pool, key=lambda r: float(r[f"last_{metric}"])) if pool else None


def retrain_summary(histories: Mapping[int, list[dict[str, Any]]], epochs: int, checkpoint: str) -> dict[str, Any]:
    """The retrain's test accuracy per seed, at its last epoch and its maximum, with mean and std over seeds."""
    seeds = sorted(histories)
    best = [max(_number(r.get("test_acc")) or 0.0 for r in histories[s]) for s in seeds]
    final = [_number(histories[s][-1].get("test_acc")) if histories[s] else None for s in seeds]
    final = [math.nan if v is None else v for v in final]
    costs = {}  # what the retrained networks spend on the test split at their last epoch, mean over seeds
    for cost in (*COSTS, "dense_macs_per_image"):
        values = [_number(histories[s][-1].get(f"test_{cost}")) for s in seeds if histories[s]]
        if values and all(v is not None for v in values):
            costs[f"final_test_{cost}_mean"] = mean(values)
    return {
        "epochs": epochs,
        "seeds": seeds,
        "max_test_acc": best,
        "final_test_acc": final,
        "max_test_acc_mean": mean(best),
        "max_test_acc_std": pstdev(best),
        "final_test_acc_mean": mean(final),
        "final_test_acc_std": pstdev(final),
        **costs,
        "checkpoint": checkpoint,
    }


def _number(value: Any) -> float | None:
    """A finite float from a record's value (CSV text, NaN or None give None)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _flag(value: Any) -> bool:
    """A boolean from a record's value, as JSON, pandas or a CSV file hold it."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def pareto_front(rows: Iterable[Mapping[str, Any]], accuracy: str, cost: str) -> list[Mapping[str, Any]]:
    """The trials that ran to the end and that no other such trial beats on both ``accuracy`` (higher)
    and ``cost`` (lower), by accuracy; ``accuracy`` and ``cost`` are trials.csv columns."""
    points = [
        r
        for r in rows
        if ran_to_the_end(r) and _number(r.get(accuracy)) is not None and _number(r.get(cost)) is not None
    ]
    front = [r for r in points if not any(_dominates(o, r, accuracy, cost) for o in points)]
    return sorted(front, key=lambda r: -float(r[accuracy]))


def spread(front: list[Mapping[str, Any]], k: int) -> list[Mapping[str, Any]]:
    """``k`` points spread evenly along the front (by their place in it, both ends included)."""
    if k >= len(front):
        return list(front)
    if k == 1:
        return [front[0]]
    places = sorted({round(i * (len(front) - 1) / (k - 1)) for i in range(k)})
    return [front[i] for i in places]


def _dominates(a: Mapping[str, Any], b: Mapping[str, Any], accuracy: str, cost: str) -> bool:
    better_or_equal = float(a[accuracy]) >= float(b[accuracy]) and float(a[cost]) <= float(b[cost])
    return better_or_equal and (float(a[accuracy]) > float(b[accuracy]) or float(a[cost]) < float(b[cost]))


def select(front: list[Mapping[str, Any]], rule: str, accuracy: str, cost: str) -> Mapping[str, Any] | None:
    """The point of the front a ``--select`` rule picks; None when no point meets a bound.

    ``max-accuracy``; ``knee``: the point nearest the ideal (best accuracy, least cost) once
    both are scaled to [0, 1] over the front, the cost on a log scale; ``<cost><=N``: the most
    accurate point whose cost is at most N; ``accuracy>=X``: the cheapest point at least that accurate.
    """
    if not front:
        return None
    if rule == "max-accuracy":
        return front[0]
    if rule == "knee":
        accs = [float(r[accuracy]) for r in front]
        costs = [math.log10(max(float(r[cost]), 1e-12)) for r in front]

        def scaled(values: list[float], value: float) -> float:
            span = max(values) - min(values)
            return 0.0 if span == 0 else (value - min(values)) / span

        return min(
            front,
            key=lambda r: math.hypot(
                1 - scaled(accs, float(r[accuracy])), scaled(costs, math.log10(max(float(r[cost]), 1e-12)))
            ),
        )
    name, op, bound = parse_selection(rule)
    if name == "accuracy":
        meeting = [r for r in front if float(r[accuracy]) >= bound]
        return min(meeting, key=lambda r: float(r[cost])) if meeting else None
    meeting = [r for r in front if float(r[cost]) <= bound]
    return max(meeting, key=lambda r: float(r[accuracy])) if meeting else None


def parse_selection(rule: str) -> tuple[str, str, float]:
    """``synops<=N``, ``spikes<=N`` or ``accuracy>=X`` (X a fraction or a percentage) as (name, op, bound)."""
    text = rule.replace(" ", "")
    for name, op in (("accuracy", ">="), *((cost, "<=") for cost in OBJECTIVES if cost != "accuracy")):
        if text.startswith(name + op):
            number = text[len(name + op) :]
            percent = number.endswith("%")
            try:
                bound = float(number.rstrip("%")) / (100 if percent else 1)
            except ValueError:
                break
            if math.isfinite(bound) and bound >= 0:
                return name, op, bound
            break
    raise ValueError(
        f"{rule!r} is not a selection: max-accuracy, knee, accuracy>=X (e.g. 0.99 or 99%), synops<=N or spikes<=N"
    )
