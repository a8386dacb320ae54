"""What a search leaves in its experiment folder: trial tables, the best config, the summary.

The names, columns and derived counts come from ``tuning.experiment``; this module only
turns Ray's ResultGrid into those records and writes them (atomically, ``snn.io``).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snn.io import write_csv, write_json

from .. import experiment as files

# Columns Ray adds to every reported result; trial_metrics.csv keeps only the trainer's.
_RAY_COLUMNS = {
    "timestamp",
    "checkpoint_dir_name",
    "done",
    "training_iteration",
    "date",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "hostname",
    "node_ip",
    "time_since_restore",
    "iterations_since_restore",
    "should_checkpoint",
    "experiment_tag",
    "trial_id",
}
_PACKAGES = ("torch", "spikingjelly", "ray", "optuna", "pandas", "plotly", "numpy")


@dataclass
class TrialOutcome:
    """One trial as Ray left it: status, sampled config and the trainer's per-epoch records."""

    trial_id: str
    status: str
    config: dict[str, Any]
    history: list[dict[str, Any]]


@dataclass
class SearchOutcome:
    """What a search produced: the trials.csv rows, the best trial and its config, and timings."""

    rows: list[dict[str, Any]]
    best_row: dict[str, Any] | None
    best_config: dict[str, Any] | None
    interrupted: bool
    trial_seconds: float  # the trials' own epochs (training + evaluation), summed
    search_seconds: float = 0.0
    max_concurrent: int = 1
    ended_by_time_budget: bool = False
    retrain: dict[str, Any] | None = field(default=None)
    pareto_retrain: list[dict[str, Any]] | None = None  # --retrain-pareto: each point's retrain summary


def trial_outcomes(grid, statuses: dict[str, str]) -> list[TrialOutcome]:
    """Each trial of a Ray ResultGrid, with its status from ``statuses`` (Ray's ExperimentAnalysis)."""
    outcomes = []
    for result in grid:
        frame = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        records = [] if frame is None or frame.empty else frame.to_dict("records")
        history = [
            {k: v for k, v in r.items() if k not in _RAY_COLUMNS and not k.startswith("config/")} for r in records
        ]
        outcomes.append(
            TrialOutcome(
                trial_id=trial_id,
                status=statuses.get(trial_id, files.ERROR if result.error else "UNKNOWN"),
                config=dict(result.config or {}),
                history=history,
            )
        )
    return outcomes


def write_trial_files(
    folder: Path,
    outcomes: list[TrialOutcome],
    metric: str,
    max_epochs: int,
    seed_trial: str | None = None,
    describe=None,
) -> list[dict[str, Any]]:
    """Write trials.csv and trial_metrics.csv; return trials.csv's rows. ``describe``: a trial's sampled values ->
    its network in words (trials.csv's ``network`` column)."""
    rows = [
        files.trial_row(
            t.trial_id,
            t.status,
            t.config,
            t.history,
            metric,
            max_epochs,
            seed_trial=t.trial_id == seed_trial,
            network=describe(t.config) if describe is not None and t.config else None,
        )
        for t in outcomes
    ]
    write_csv(folder / files.TRIALS, rows)
    write_csv(folder / files.TRIAL_METRICS, [{"trial_id": t.trial_id, **r} for t in outcomes for r in t.history])
    return rows


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    """summary.json, with the package versions and git commit that produced it."""
    write_json(folder / files.SUMMARY, {**summary, "versions": package_versions(), "git_commit": git_commit()})


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
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
