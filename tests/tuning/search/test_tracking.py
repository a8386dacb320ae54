"""The trackers users of Ray Tune and Optuna expect, on a real smoke search: MLflow, TensorBoard, optuna-dashboard."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.tuning.helpers import REPO, free_port, search_command, start_search

TRIALS = 4


@pytest.fixture(scope="module")
def tracked(data_root, tmp_path_factory) -> Path:
    """One smoke search with --logger mlflow --logger tensorboard (no retrain, no report)."""
    folder = tmp_path_factory.mktemp("tracked")
    command = search_command("fc", folder, "tracked", "--preset", "smoke", "--trials", str(TRIALS), "--no-retrain",
                             "--no-report", "--no-dashboard", "--logger", "mlflow", "--logger", "tensorboard")
    process = start_search(command, data_root, folder / "search.log")
    assert process.wait(timeout=600) == 0, (folder / "search.log").read_text()[-3000:]
    return folder / "tracked"


def test_mlflow_holds_one_run_per_trial_with_its_metrics(tracked):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tracked / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tracked"], output_format="list")
    assert len(runs) == TRIALS
    assert all("test_acc" in run.data.metrics and "lr" in run.data.params for run in runs)


def test_tensorboard_event_files_hold_each_trials_accuracy(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_files = sorted((tracked / "tune").glob("*/events.out.tfevents.*"))
    assert len(event_files) == TRIALS
    for path in event_files:
        events = EventAccumulator(str(path))
        events.Reload()
        assert "ray/tune/test_acc" in events.Tags()["scalars"]
        assert len(events.Scalars("ray/tune/test_acc")) >= 1


def test_optuna_dashboard_serves_the_search_study(tracked):
    port = free_port()
    command = Path(sys.executable).with_name("optuna-dashboard")  # the command the README shows
    server = subprocess.Popen([str(command), str(tracked / "optuna.journal"),
                               "--host", "127.0.0.1", "--port", str(port), "--quiet"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
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
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}",
                                    timeout=10) as response:
            study = json.loads(response.read())
        assert len(study["trials"]) == TRIALS
    finally:
        server.terminate()
        server.wait(timeout=30)
