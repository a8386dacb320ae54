"""A search stops trials whose network is silent within their first epoch, and says so everywhere."""

from __future__ import annotations

import json

import optuna
import pandas as pd

from tests.tuning.helpers import search_command, start_search

# An lr far too small to move the weights: the FC-SNN stays as silent as it starts. 100 batches an epoch,
# so the probe (60 warm-up and 20 watched batches, Firmin et al.'s S and F) judges within the first.
SILENT_SPACE = """
model: fc
search:
  lr: {type: float, low: 1.0e-9, high: 2.0e-9, log: true}
  T: {type: int, low: 8, high: 8}
fixed:
  limit_train: 12800
  limit_test: 500
budget:
  trials: 2
  epochs_per_trial: 3
  retrain_epochs: 1
"""


def test_a_search_stops_silent_trials_in_their_first_epoch_and_tells_optuna_they_were_pruned(tmp_path, data_root):
    space = tmp_path / "silent.yaml"
    space.write_text(SILENT_SPACE)
    command = search_command(
        "fc",
        tmp_path,
        "quiet",
        "--space",
        str(space),
        "--no-seed-trial",
        "--no-retrain",
        "--no-report",
        "--no-dashboard",
        "--max-concurrent",
        "1",
    )
    process = start_search(command, data_root, tmp_path / "search.log")
    assert process.wait(timeout=600) == 0, (tmp_path / "search.log").read_text()[-3000:]
    trials = pd.read_csv(tmp_path / "quiet" / "trials.csv")
    assert trials["silent"].all() and not trials["stopped_early"].any() and (trials["epochs"] == 1).all()
    metrics = pd.read_csv(tmp_path / "quiet" / "trial_metrics.csv")
    assert metrics["silent"].all() and (metrics["silence_fraction"] > 0.05).all()
    summary = json.loads((tmp_path / "quiet" / "summary.json").read_text())
    assert summary["trials"]["silent"] == 2 and summary["trials"]["completed"] == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "quiet" / "optuna.journal"))
    )
    study = optuna.load_study(study_name="quiet", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert "2 silent" in (tmp_path / "search.log").read_text()
