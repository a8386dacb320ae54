"""A search over accuracy and SynOps: the front in pareto.csv is Optuna's, --select picks from it, bad specs are one line."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pandas as pd
import pytest

from tests.tuning.helpers import FAULTY_SEARCH, REPO, search_command, start_search
from tests.tuning.search.faulty_search import TRADE_OFF_ENV


@pytest.fixture(scope="module")
def two_objectives(data_root, tmp_path_factory):
    """A two-objective smoke search whose trials report SynOps that grow with their accuracy (a synthetic cost,
    COST_FOLLOWS_ACCURACY): no finished trial dominates another, so the front holds every trial that ran all its
    epochs, on any data. ASHA's one rung (epoch 2 of 3) still stops some."""
    folder = tmp_path_factory.mktemp("pareto")
    command = search_command(
        "fc",
        folder,
        "pareto",
        "--preset",
        "smoke",
        "--trials",
        "8",
        "--grace-period",
        "2",
        "--objective",
        "accuracy,synops",
        "--select",
        "knee",
        "--retrain-pareto",
        "2",
        "--no-dashboard",
        "--no-report",
        "--max-concurrent",
        "2",
        module=FAULTY_SEARCH,
    )
    process = start_search(command, data_root, folder / "search.log", **{TRADE_OFF_ENV: "1"})
    assert process.wait(timeout=600) == 0, (folder / "search.log").read_text()[-3000:]
    return folder / "pareto", (folder / "search.log").read_text()


def test_the_front_in_pareto_csv_is_the_studys_best_trials(two_objectives):
    folder, _ = two_objectives
    front = pd.read_csv(folder / "pareto.csv", dtype={"trial_id": str})
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal")))
    study = optuna.load_study(study_name="pareto", storage=storage)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert sorted(front["trial_id"]) == sorted(t.user_attrs["ray_trial_id"] for t in study.best_trials)
    trials = pd.read_csv(folder / "trials.csv", dtype={"trial_id": str})
    stopped = set(trials.loc[trials["stopped_early"], "trial_id"])
    assert not stopped & set(front["trial_id"])  # no trial ASHA stopped is on the front


def test_the_retrained_configuration_is_the_selected_point_of_the_front(two_objectives):
    folder, log = two_objectives
    summary = json.loads((folder / "summary.json").read_text())
    front = pd.read_csv(folder / "pareto.csv", dtype={"trial_id": str})
    assert summary["best_trial"]["trial_id"] in set(front["trial_id"])
    assert summary["objectives"] == ["test_acc", "test_synops_per_image"] and summary["selected_by"] == "knee"
    assert "selected (knee) from the Pareto front trial" in log and "synops per image" in log


def test_retrain_pareto_retrains_points_spread_along_the_front(two_objectives):
    folder, log = two_objectives
    front = pd.read_csv(folder / "pareto.csv", dtype={"trial_id": str})
    trials = pd.read_csv(folder / "trials.csv", dtype={"trial_id": str})
    ran_all = trials[(trials["status"] == "TERMINATED") & ~trials["stopped_early"] & ~trials["silent"]]
    assert sorted(front["trial_id"]) == sorted(ran_all["trial_id"])  # the synthetic cost: none dominates another
    assert len(front) >= 2, f"a front of {len(front)} point(s) has no two ends to retrain: {trials.to_dict('records')}"
    retrained = json.loads((folder / "summary.json").read_text())["pareto_retrain"]
    assert len(retrained) == 2
    assert retrained[0]["trial_id"] == front["trial_id"].iloc[0]  # the most accurate end ...
    assert retrained[-1]["trial_id"] == front["trial_id"].iloc[-1]  # ... and the cheapest end
    for point in retrained:
        metrics = pd.read_csv(folder / "retrain-pareto" / point["trial_id"] / "retrain" / "metrics.csv")
        assert point["retrain"]["final_test_acc"] == [metrics.sort_values("epoch")["test_acc"].iloc[-1]]
        assert f"Pareto point {point['trial_id']} retrained" in log


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--objective", "accuracy,latency"], "argument --objective: 'accuracy,latency': use accuracy"),
        (["--select", "cheapest"], "argument --select: 'cheapest' is not a selection"),
        (["--select", "synops>=5"], "argument --select: 'synops>=5' is not a selection"),
        (["--retrain-pareto", "2"], "--retrain-pareto 2: needs two objectives"),
    ],
)
def test_bad_objective_or_select_specifications_are_one_line_and_exit_2(tmp_path, flags, expected):
    run = subprocess.run(
        [sys.executable, "-m", "tuning.search", "fc", "--results-dir", str(tmp_path), *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and expected in run.stderr, run.stderr
    assert not any(tmp_path.iterdir())
