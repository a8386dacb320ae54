"""The experiment folder: trials.csv, trial_metrics.csv, best_config.json, summary.json.

Everything is written atomically from Ray's ResultGrid (and the retrain's histories), so a
report can be rebuilt from these files alone.
"""

from __future__ import annotations

import importlib.metadata
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, pstdev
from typing import Any

import pandas as pd

from snn.io import write_csv, write_json

from .searcher import DIVERGED, EPOCH

# Columns Ray adds to every reported result; trial_metrics.csv keeps only the trainer's.
_RAY_COLUMNS = {
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "date", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore",
    "should_checkpoint", "experiment_tag",
}
_PACKAGES = ("torch", "spikingjelly", "ray", "optuna", "pandas", "plotly", "numpy")
_FINISHED = ("TERMINATED", "ERROR")


@dataclass
class TrialOutcome:
    """One trial as the experiment folder records it."""

    trial_id: str
    status: str
    config: dict[str, Any]
    history: pd.DataFrame  # the trainer's per-epoch records
    error: bool


def trial_outcomes(grid, statuses: dict[str, str]) -> list[TrialOutcome]:
    """Read each trial of a Ray ResultGrid: its status (from ``statuses``), config and per-epoch records."""
    outcomes = []
    for result in grid:
        frame = result.metrics_dataframe
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        if frame is None or frame.empty:
            frame = pd.DataFrame()
        keep = [c for c in frame.columns if c not in _RAY_COLUMNS and not c.startswith("config/")]
        outcomes.append(TrialOutcome(
            trial_id=trial_id,
            status=statuses.get(trial_id, "ERROR" if result.error else "UNKNOWN"),
            config=dict(result.config or {}),
            history=frame[keep].drop(columns=["trial_id"], errors="ignore").reset_index(drop=True),
            error=result.error is not None,
        ))
    return outcomes


def trial_rows(outcomes: list[TrialOutcome], metric: str, max_epochs: int) -> list[dict[str, Any]]:
    """One row per trial for trials.csv."""
    rows = []
    for t in outcomes:
        h = t.history
        epochs = int(h[EPOCH].max()) if EPOCH in h and len(h) else 0
        diverged = bool(h[DIVERGED].fillna(False).astype(bool).any()) if DIVERGED in h else False
        row = {
            "trial_id": t.trial_id,
            "status": t.status,
            "stopped_early": t.status == "TERMINATED" and not diverged and epochs < max_epochs,
            "diverged": diverged,
            "epochs": epochs,
        }
        for name in dict.fromkeys([metric, "test_acc"]):
            values = h[name].dropna() if name in h else pd.Series(dtype=float)
            row[f"best_{name}"] = float(values.max()) if len(values) else math.nan
            row[f"last_{name}"] = float(values.iloc[-1]) if len(values) else math.nan
        if "node_id" in h and len(h):
            row["node_id"] = h["node_id"].iloc[-1]
        row.update({f"config/{k}": v for k, v in t.config.items()})
        rows.append(row)
    return rows


def trial_metric_rows(outcomes: list[TrialOutcome]) -> list[dict[str, Any]]:
    """The long table: one row per (trial, epoch)."""
    rows = []
    for t in outcomes:
        for record in t.history.to_dict("records"):
            rows.append({"trial_id": t.trial_id, **record})
    return rows


def trial_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "total": len(rows),
        "completed": sum(r["status"] == "TERMINATED" and not r["stopped_early"] and not r["diverged"] for r in rows),
        "stopped_early": sum(bool(r["stopped_early"]) for r in rows),
        "errored": sum(r["status"] == "ERROR" for r in rows),
        "diverged": sum(bool(r["diverged"]) for r in rows),
        "unfinished": sum(r["status"] not in _FINISHED for r in rows),
    }


def best_trial(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The trial with the highest metric at any of its epochs (NaN-free)."""
    scored = [r for r in rows if not math.isnan(r[f"best_{metric}"])]
    return max(scored, key=lambda r: r[f"best_{metric}"]) if scored else None


def retrain_summary(histories: dict[int, list[dict[str, Any]]], epochs: int, checkpoint: str) -> dict[str, Any]:
    """Max and final test accuracy per seed, with mean and std over seeds."""
    seeds = sorted(histories)
    best = [max(r["test_acc"] for r in histories[s] if "test_acc" in r) for s in seeds]
    final = [histories[s][-1].get("test_acc", math.nan) for s in seeds]
    return {
        "epochs": epochs, "seeds": seeds, "max_test_acc": best, "final_test_acc": final,
        "max_test_acc_mean": mean(best), "max_test_acc_std": pstdev(best),
        "final_test_acc_mean": mean(final), "final_test_acc_std": pstdev(final),
        "checkpoint": checkpoint,
    }


def write_trial_files(folder: Path, rows: list[dict[str, Any]], metric_rows: list[dict[str, Any]]) -> None:
    write_csv(folder / "trials.csv", rows)
    write_csv(folder / "trial_metrics.csv", metric_rows)


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    write_json(folder / "summary.json", {**summary, "versions": package_versions(), "git_commit": git_commit()})


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
