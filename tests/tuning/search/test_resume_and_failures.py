"""Interrupted and failing searches: kill the CLI mid-search and --resume; a crashing trial is retried."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pyarrow.fs
from ray import tune

from snn.run_folder import CHECKPOINT_FILE
from tests.tuning.helpers import FAULTY_SEARCH, REPO, search_command, start_search
from tests.tuning.search.faulty_search import CRASH_ENV, SLOW_ENV, SLOW_RETRAIN_ENV
from tuning.search.digests import signed_filesystem
from tuning.search.trial import (
    STAGING_PREFIX,
    STAGING_STALE_S,
    _report_with_checkpoint,
    checkpoint_file,
    sweep_staging,
)

QUICK = ("--preset", "smoke", "--no-retrain", "--no-report", "--no-dashboard", "--max-concurrent", "1")


def finished_in_study(folder, name: str) -> list[optuna.trial.FrozenTrial]:
    journal = folder / "optuna.journal"
    if not journal.exists():
        return []
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return []
    return [t for t in study.trials if t.state.is_finished()]


def kill_group(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGKILL the CLI and the local Ray it started (same process group); other Ray instances live on."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # stragglers: Ray workers forked before the kill
        except ProcessLookupError:
            return
        time.sleep(0.5)
    raise AssertionError(f"processes of group {process.pid} still alive after {timeout} s")


def test_a_killed_search_resumes_without_losing_finished_trials(tmp_path, data_root):
    trials = 5
    # the trial function of faulty_search (Ray resumes only with the same one), its first trials at least
    # 3 s long (1 s more an epoch), so the kill lands before the search can finish
    command = search_command("fc", tmp_path, "cut", *QUICK, "--trials", str(trials), module=FAULTY_SEARCH)
    # killed first before Ray Tune saved any trial (it had written only tune/tuner.pkl): Ray's restore then
    # starts the run afresh, which must still run all the trials asked for
    process = start_search(command, data_root, tmp_path / "early.log")
    tune_folder = tmp_path / "cut" / "tune"
    while not (tune_folder / "tuner.pkl").exists():
        assert process.poll() is None, (tmp_path / "early.log").read_text()[-3000:]
        time.sleep(0.01)
    kill_group(process)
    assert not list(tune_folder.glob("experiment_state-*.json"))
    command += ["--resume"]
    process = start_search(command, data_root, tmp_path / "first.log", **{SLOW_ENV: "1"})
    deadline = time.time() + 300
    while len(finished_in_study(tmp_path / "cut", "cut")) < 2 and time.time() < deadline:
        assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.5)
    kill_group(process)
    said = (tmp_path / "first.log").read_text()
    assert "its trials start afresh" in said and "Failed to restore" not in said, said[-3000:]
    before = {t.number: t for t in finished_in_study(tmp_path / "cut", "cut")}
    assert 2 <= len(before) < trials
    assert not (tmp_path / "cut" / "summary.json").exists()

    resumed = start_search(command, data_root, tmp_path / "second.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]

    table = pd.read_csv(tmp_path / "cut" / "trials.csv")
    assert len(table) == trials  # the total stays what was asked
    assert set(table["status"]) == {"TERMINATED"}
    after = {t.number: t for t in finished_in_study(tmp_path / "cut", "cut")}
    for number, trial in before.items():  # finished trials are kept as they were, not run again
        assert after[number].state == trial.state and after[number].value == trial.value
        assert after[number].intermediate_values == trial.intermediate_values


def running_trial_with_a_checkpoint(tune_folder):
    """(trial folder, checkpoint name) of an unfinished trial whose checkpoint Ray's newest saved state names and
    that is on disk, else None."""
    states = sorted(tune_folder.glob("experiment_state-*.json"))
    if not states:
        return None
    try:
        trial_data = json.loads(states[-1].read_text())["trial_data"]
    except (ValueError, KeyError, OSError):
        return None  # being written
    for trial_json, runtime_json in trial_data:
        trial_state, result = json.loads(trial_json), json.loads(runtime_json).get("last_result") or {}
        folder, name = tune_folder / trial_state["relative_logdir"], result.get("checkpoint_dir_name")
        if trial_state["status"] != "TERMINATED" and name and (folder / name / CHECKPOINT_FILE).exists():
            return folder, name
    return None


def test_a_trial_whose_checkpoint_ray_deleted_before_saving_its_state_continues_from_its_newest(tmp_path, data_root):
    """Ray Tune deletes a trial's older checkpoint when it registers a newer one and saves the state that names the
    newer one a moment later; a kill in between is made here: the named checkpoint moves to the next name."""
    command = search_command("fc", tmp_path, "lost", *QUICK, "--trials", "1", module=FAULTY_SEARCH)
    process = start_search(command, data_root, tmp_path / "first.log", **{SLOW_ENV: "1"})
    tune_folder, deadline, found = tmp_path / "lost" / "tune", time.time() + 300, None
    while found is None and time.time() < deadline:
        assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.2)
        found = running_trial_with_a_checkpoint(tune_folder)
    kill_group(process)
    assert found is not None
    folder, name = found
    newer = folder / f"checkpoint_{int(name.rsplit('_', 1)[1]) + 1:06d}"
    if newer.exists():  # Ray had uploaded the next epoch's already: the state lags by one epoch
        shutil.rmtree(folder / name)
    else:
        (folder / name).rename(newer)

    resumed = start_search([*command, "--resume"], data_root, tmp_path / "second.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert "continues from its newest checkpoint" in (tmp_path / "second.log").read_text()
    table = pd.read_csv(tmp_path / "lost" / "trials.csv")
    assert len(table) == 1 and set(table["status"]) == {"TERMINATED"}
    metrics = pd.read_csv(tmp_path / "lost" / "trial_metrics.csv")
    for trial_id, rows in metrics.groupby("trial_id"):
        assert rows["epoch"].tolist() == list(range(1, len(rows) + 1)), trial_id  # each epoch once, none lost


def test_a_crashing_trial_is_retried_from_its_checkpoint(tmp_path, data_root):
    markers = tmp_path / "markers"
    markers.mkdir()
    command = search_command(
        "fc",
        tmp_path,
        "crash",
        *QUICK,
        "--trials",
        "2",
        "--grace-period",
        "3",
        "--max-failures",
        "2",
        module=FAULTY_SEARCH,
    )
    process = start_search(command, data_root, tmp_path / "crash.log", **{CRASH_ENV: f"2:{markers}"})
    assert process.wait(timeout=600) == 0, (tmp_path / "crash.log").read_text()[-3000:]
    crashed = sorted(p.name.removeprefix("crashed-") for p in markers.iterdir())
    assert len(crashed) == 2  # every trial crashed once at epoch 2 ...
    table = pd.read_csv(tmp_path / "crash" / "trials.csv")
    assert set(table["status"]) == {"TERMINATED"} and set(table["epochs"]) == {3}  # ... and finished all epochs
    metrics = pd.read_csv(tmp_path / "crash" / "trial_metrics.csv")
    for _, rows in metrics.groupby("trial_id"):
        assert rows["epoch"].tolist() == [1, 2, 3]  # resumed after epoch 1's checkpoint, no epoch lost or repeated


def test_a_trial_resumes_from_its_checkpoint_in_place_and_copies_only_what_this_machine_lacks(tmp_path, monkeypatch):
    """Ray's ``as_directory`` would copy every checkpoint of the search's (signing) file system to the temporary
    folder for the whole trial, a copy a killed trial leaves behind; the experiment folder's file is read in place."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    folder = tmp_path / "exp" / "trial" / "checkpoint_000001"
    folder.mkdir(parents=True)
    (folder / CHECKPOINT_FILE).write_bytes(b"weights")
    with checkpoint_file(None) as path:
        assert path is None
    with checkpoint_file(tune.Checkpoint(str(folder), filesystem=signed_filesystem())) as path:
        assert path == folder / CHECKPOINT_FILE
        assert list((tmp_path / "tmp").iterdir()) == []
    elsewhere = pyarrow.fs.SubTreeFileSystem(str(tmp_path / "exp"), pyarrow.fs.LocalFileSystem())  # not a local path
    stale = tmp_path / "cwd" / "trial" / "checkpoint_000001"  # the same relative path in the current folder
    stale.mkdir(parents=True)
    (stale / CHECKPOINT_FILE).write_bytes(b"another run's")
    monkeypatch.chdir(tmp_path / "cwd")
    with checkpoint_file(tune.Checkpoint("trial/checkpoint_000001", filesystem=elsewhere)) as path:
        assert path.parent.parent == tmp_path / "tmp" and path.read_bytes() == b"weights"
    assert not path.exists()  # Ray's copy is gone with the trial


def test_a_crash_beyond_max_failures_is_reported_as_an_errored_trial(tmp_path, data_root):
    markers = tmp_path / "markers"
    markers.mkdir()
    command = search_command(
        "fc", tmp_path, "fails", *QUICK, "--trials", "1", "--max-failures", "0", module=FAULTY_SEARCH
    )
    process = start_search(command, data_root, tmp_path / "fails.log", **{CRASH_ENV: f"1:{markers}"})
    assert process.wait(timeout=600) == 0, (tmp_path / "fails.log").read_text()[-3000:]
    table = pd.read_csv(tmp_path / "fails" / "trials.csv")
    assert table["status"].tolist() == ["ERROR"]


def test_a_time_budget_ends_a_search_of_slow_trials_on_time_and_the_retrain_still_runs(tmp_path, data_root):
    """Ten trials of three 3-second epochs would take 90 s; a 12 s budget ends the search, then it retrains."""
    command = search_command(
        "fc",
        tmp_path,
        "budget",
        "--preset",
        "smoke",
        "--no-report",
        "--no-dashboard",
        "--max-concurrent",
        "1",
        "--trials",
        "10",
        "--time-budget",
        "12s",
        module=FAULTY_SEARCH,
    )
    start = time.time()
    process = start_search(command, data_root, tmp_path / "budget.log", **{SLOW_ENV: "3"})
    assert process.wait(timeout=600) == 0, (tmp_path / "budget.log").read_text()[-3000:]
    summary = json.loads((tmp_path / "budget" / "summary.json").read_text())
    assert summary["ended_by"] == "time budget" and summary["status"] == "complete"
    assert summary["search_seconds"] < 12 + 30  # the budget, plus the time to stop the running trial (cores shared)
    assert 1 <= summary["trials"]["total"] < 10
    assert (tmp_path / "budget" / "retrain" / "seed-0" / "checkpoint.pt").exists()
    assert "the time budget ended the search" in (tmp_path / "budget.log").read_text()
    assert time.time() - start < 180


def test_ctrl_c_in_the_retrain_stops_it_at_once_and_resume_finishes_it(tmp_path, data_root):
    """Ray Tune leaves its SIGINT handler set after a search that ends by itself; the retrain's Ctrl-C must still
    stop the command (one line, exit 130, no traceback), and --resume then finishes the retrain from its epoch."""
    flags = ("--preset", "smoke", "--trials", "1", "--epochs-per-trial", "1", "--retrain-epochs", "4")
    command = search_command("fc", tmp_path, "ctrl-c", *flags, "--no-report", "--no-dashboard", module=FAULTY_SEARCH)
    log, first_epoch = tmp_path / "ctrl-c.log", tmp_path / "ctrl-c" / "retrain" / "seed-0" / CHECKPOINT_FILE
    process = subprocess.Popen(  # start_search's, with SIGINT as a terminal has it (a pytest-xdist worker ignores it)
        command,
        cwd=REPO,
        env={**os.environ, "SNN_DATA_DIR": str(data_root), SLOW_RETRAIN_ENV: "3"},  # the Ctrl-C finds it running
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while not first_epoch.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, log.read_text()[-3000:]
    os.killpg(process.pid, signal.SIGINT)  # once, as a terminal's Ctrl-C
    assert process.wait(timeout=60) == 130, log.read_text()[-3000:]
    output = log.read_text()
    assert "Traceback" not in output and "retrain epoch 4/4" not in output
    assert output.count("search interrupted; continue with: python -m tuning.search") == 1
    assert json.loads((tmp_path / "ctrl-c" / "summary.json").read_text())["status"] == "interrupted"

    resumed = subprocess.run(
        [*command, "--resume"], cwd=REPO, env={**os.environ, "SNN_DATA_DIR": str(data_root)}, capture_output=True
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout.decode()[-3000:] + resumed.stderr.decode()[-3000:]
    summary = json.loads((tmp_path / "ctrl-c" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["retrain"]["epochs"] == 4
    retrained = pd.read_csv(tmp_path / "ctrl-c" / "retrain" / "metrics.csv")
    assert retrained["epoch"].tolist() == [1, 2, 3, 4], (
        "each retrain epoch once: the resume went on from its checkpoint"
    )
    assert "retrain epoch 1/4" not in resumed.stdout.decode()


def test_checkpoint_staging_folders_of_killed_trials_are_swept_and_nothing_else(tmp_path, monkeypatch):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(dead.stdout)  # a process id that has just ended
    left = tmp_path / f"{STAGING_PREFIX}{gone}-abc123"  # a killed trial's folder, with its checkpoint
    left.mkdir()
    (left / CHECKPOINT_FILE).write_bytes(b"weights")
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-def456"  # a running trial's
    live.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / f"{STAGING_PREFIX}{gone}-link").symlink_to(target)
    (tmp_path / f"{STAGING_PREFIX}{gone}-file").write_text("not a folder")
    (tmp_path / f"{STAGING_PREFIX}x-ghi789").mkdir()  # not a process id
    (tmp_path / f"tmp{gone}").mkdir()  # another program's
    (tmp_path / f"{STAGING_PREFIX}{'9' * 30}-big").mkdir()  # not a process id either
    hour_ago = time.time() - STAGING_STALE_S - 60
    for path in tmp_path.iterdir():
        os.utime(path, (hour_ago, hour_ago), follow_symlinks=False)
    recent = tmp_path / f"{STAGING_PREFIX}{gone}-jkl012"  # perhaps a live trial of another PID namespace's
    recent.mkdir()

    assert sweep_staging(tmp_path) == 1
    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, "elsewhere", f"{STAGING_PREFIX}{gone}-link", f"{STAGING_PREFIX}{gone}-file",
         f"{STAGING_PREFIX}x-ghi789", f"tmp{gone}", f"{STAGING_PREFIX}{'9' * 30}-big", recent.name]
    )  # fmt: skip
    assert sweep_staging(tmp_path, now=time.time() + STAGING_STALE_S + 60) == 1 and not recent.exists()

    reported = []
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint: reported.append(Path(checkpoint.path)))
    _report_with_checkpoint({"epoch": 1}, lambda path: path.write_bytes(b"weights"))
    assert reported[0].parent == tmp_path and reported[0].name.startswith(f"{STAGING_PREFIX}{os.getpid()}-")
    assert not reported[0].exists()  # removed once Ray has copied it
