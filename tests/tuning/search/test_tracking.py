"""The trackers users of Ray Tune and Optuna expect, on a real smoke search: MLflow, TensorBoard, optuna-dashboard."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.tuning.helpers import REPO, free_port, search_command, start_search
from tuning import experiment as files

TRIALS = 4


@pytest.fixture(scope="module")
def tracked(data_root, tmp_path_factory) -> Path:
    """One smoke search with --logger mlflow --logger tensorboard (no retrain, no report)."""
    folder = tmp_path_factory.mktemp("tracked")
    command = search_command(
        "fc",
        folder,
        "tracked",
        "--preset",
        "smoke",
        "--trials",
        str(TRIALS),
        "--no-retrain",
        "--no-report",
        "--no-dashboard",
        "--logger",
        "mlflow",
        "--logger",
        "tensorboard",
    )
    process = start_search(command, data_root, folder / "search.log")
    assert process.wait(timeout=600) == 0, (folder / "search.log").read_text()[-3000:]
    return folder / "tracked"


def trial_records(tracked: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(trials.csv by trial id, trial_metrics.csv, the search's metric): what each tracker must agree with."""
    trials = pd.read_csv(tracked / files.TRIALS, dtype={"trial_id": str}).set_index("trial_id")
    metrics = pd.read_csv(tracked / files.TRIAL_METRICS, dtype={"trial_id": str})
    return trials, metrics, json.loads((tracked / files.SUMMARY).read_text())["metric"]


def per_epoch(metrics: pd.DataFrame, trial_id: str, column: str) -> list[float]:
    rows = metrics[metrics["trial_id"] == trial_id].sort_values("epoch")
    return rows[column].tolist()


def same_value(shown: str | None, value) -> bool:
    """A tracker's text of a sampled value against trials.csv's value (numbers to float rounding)."""
    if pd.isna(value):  # not sampled in this trial (a conditional parameter)
        return shown is None
    try:
        return float(shown) == pytest.approx(float(value))
    except (TypeError, ValueError):
        return shown == str(value)


def trial_of(name: str, trial_ids) -> str:
    (trial_id,) = [t for t in trial_ids if t in name]
    return trial_id


def test_mlflow_holds_one_run_per_trial_with_its_config_and_every_epochs_accuracy(tracked):
    import mlflow

    trials, metrics, _ = trial_records(tracked)
    mlflow.set_tracking_uri(f"sqlite:///{tracked / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tracked"], output_format="list")
    assert len(runs) == TRIALS
    client = mlflow.tracking.MlflowClient()
    searched = [c.removeprefix("config/") for c in trials.columns if c.startswith("config/")]
    assert searched
    for run in runs:
        trial_id = trial_of(run.info.run_name, trials.index)
        for name in searched:  # the trial's sampled configuration
            assert same_value(run.data.params.get(name), trials.loc[trial_id, f"config/{name}"]), name
        history = sorted(client.get_metric_history(run.info.run_id, "test_acc"), key=lambda m: m.step)
        assert [m.value for m in history] == pytest.approx(per_epoch(metrics, trial_id, "test_acc"))
        assert history[-1].value == pytest.approx(trials.loc[trial_id, "last_test_acc"])


def test_tensorboard_event_files_hold_each_trials_accuracy_at_every_epoch(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trials, metrics, _ = trial_records(tracked)
    event_files = sorted((tracked / "tune").glob("*/events.out.tfevents.*"))
    assert len(event_files) == TRIALS
    seen = set()
    for path in event_files:
        trial_id = trial_of(path.parent.name, trials.index)
        events = EventAccumulator(str(path))
        events.Reload()
        scalars = sorted(events.Scalars("ray/tune/test_acc"), key=lambda e: e.step)
        assert [e.value for e in scalars] == pytest.approx(per_epoch(metrics, trial_id, "test_acc"), abs=1e-6)
        seen.add(trial_id)
    assert seen == set(trials.index)


def test_optuna_dashboard_serves_the_search_study(tracked):
    port = free_port()
    command = Path(sys.executable).with_name("optuna-dashboard")  # the command docs/search.md shows
    server = subprocess.Popen(
        [str(command), str(tracked / "optuna.journal"), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        studies = None
        deadline = time.time() + 60
        while studies is None and time.time() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.loads(response.read())["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "optuna-dashboard did not answer within 60 s"
        assert [s["study_name"] for s in studies] == ["tracked"]
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", timeout=10
        ) as response:
            study = json.loads(response.read())
        assert len(study["trials"]) == TRIALS
    finally:
        server.terminate()
        server.wait(timeout=30)
    # what it shows of each trial is the search's: its sampled values and every epoch of the search's metric
    trials, metrics, metric = trial_records(tracked)
    shown = set()
    for trial in study["trials"]:
        trial_id = {a["key"]: a["value"] for a in trial["user_attrs"]}[files.RAY_TRIAL_ID]
        for param in trial["params"]:  # a case of a by: parameter is lr[optimizer=adam]: the config's lr, under Adam
            name, _, case = param["name"].partition("[")
            assert same_value(param["param_external_value"], trials.loc[trial_id, f"config/{name}"]), param
            if case:
                other, _, value = case.removesuffix("]").partition("=")
                assert str(trials.loc[trial_id, f"config/{other}"]) == value, param
        steps = [v["step"] for v in trial["intermediate_values"]]
        values = [v["value"] for v in trial["intermediate_values"]]
        assert steps == list(range(1, len(steps) + 1)) and steps
        assert values == pytest.approx(per_epoch(metrics, trial_id, metric)[: len(values)])
        assert len(values) == trials.loc[trial_id, "epochs"]
        shown.add(trial_id)
    assert shown == set(trials.index)
