"""The whole path, as a new user runs it: `python -m tuning.search fc --preset smoke` on MNIST (or its synthetic stand-in).

One search runs per module (a Ray start costs seconds on 2 cores); while it runs, the test calls
the Ray dashboard's HTTP API with the token; afterwards each test checks one part of what it left.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from snn import RunConfig
from tests.tuning.cdp_browser import HeadlessChromium, chromium_path, require_chromium
from tests.tuning.helpers import FAULTY_SEARCH, free_port, search_command, start_search
from tests.tuning.search.faulty_search import PAUSE_ENV
from tuning.report.build import SECTIONS

TOKEN_FILE = Path.home() / ".ray" / "auth_token"
SMOKE_TRIALS, SMOKE_EPOCHS = 6, 3


def dashboard_actors(port: int, token: bool = True) -> tuple[int, list[dict]]:
    """GET the dashboard's actor list (with the token unless ``token`` is false); (HTTP status, actors)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v0/actors?limit=200")
    if token and TOKEN_FILE.exists():
        request.add_header("Authorization", f"Bearer {TOKEN_FILE.read_text().strip()}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)["data"]["result"]["result"]
    except urllib.error.HTTPError as e:
        return e.code, []
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, []


def screenshot_dashboard(port: int, folder: Path) -> dict:
    """Sign in to the dashboard with the token (its cookie), open the actors page, save a PNG."""
    with HeadlessChromium(folder / "chromium-profile", width=1400, height=900) as browser:
        if TOKEN_FILE.exists():
            browser.send(
                "Network.setCookie",
                name="ray-authentication-token",
                value=TOKEN_FILE.read_text().strip(),
                url=f"http://127.0.0.1:{port}/",
            )
        browser.navigate(f"http://127.0.0.1:{port}/#/actors")
        browser.wait_for("document.body.innerText.includes('fc_trial')", timeout=30)
        text = browser.evaluate("document.body.innerText")
        path = browser.screenshot(folder / "dashboard.png", full_page=False)
    return {"path": path, "text": text}


@pytest.fixture(scope="module")
def smoke(data_root, tmp_path_factory):
    """Run the smoke search once; record what the dashboard said (and showed) while it ran."""
    folder = tmp_path_factory.mktemp("smoke")
    port = free_port()
    log = folder / "search.log"
    # One trial at a time makes the search deterministic (seeded TPE, seeded trials), so ASHA's stops are too.
    command = search_command(
        "fc",
        folder,
        "smoke",
        "--preset",
        "smoke",
        "--max-concurrent",
        "1",
        "--dashboard-port",
        str(port),
        module=FAULTY_SEARCH,
    )
    pause = folder / "pause"  # the first trial waits until the dashboard has been looked at
    pause.touch()
    process = start_search(command, data_root, log, **{PAUSE_ENV: str(pause)})
    seen: dict = {"status": None, "trial_actors": 0, "without_token": None}
    deadline = time.time() + 240
    while process.poll() is None and time.time() < deadline:
        status, actors = dashboard_actors(port)
        # each trial runs in an actor named after the model (Ray Tune's own name: wrap_function.<locals>.ImplicitFunc)
        trial_actors = [a for a in actors if a.get("class_name") == "fc_trial" and a.get("state") == "ALIVE"]
        if status == 200 and trial_actors:
            seen = {
                "status": status,
                "trial_actors": len(trial_actors),
                "classes": {a["class_name"] for a in actors},
                "without_token": dashboard_actors(port, token=False),
            }
            break
        time.sleep(1)
    try:
        page = screenshot_dashboard(port, folder) if chromium_path() and process.poll() is None else None
    finally:
        pause.unlink()
    code = process.wait(timeout=600)
    return {
        "dir": folder / "smoke",
        "code": code,
        "log": log.read_text(),
        "dashboard": seen,
        "port": port,
        "page": page,
    }


def test_the_search_says_its_cost_and_shows_a_live_table_naming_only_the_experiment_folder(smoke):
    log = smoke["log"]
    assert "budget: at most 18 trial-epochs (6 trials x up to 3 epochs, 1 at once)" in log
    assert "estimate: one epoch of the seed's configuration takes" in log
    assert f"experiment: {smoke['dir']}" in log
    assert re.search(r"\] \d of 6 trials done \(\d stopped early by ASHA, \d silent, \d errored\), 1 running", log)
    assert re.search(r"epoch \d/3 +(\d+%| +-) of it", log)  # a running trial's row
    assert "Result logdir" not in log and "Tuner.restore" not in log


def test_the_search_finishes_and_prints_the_dashboard_url_and_how_to_authenticate(smoke):
    assert smoke["code"] == 0, smoke["log"][-3000:]
    assert f"Ray dashboard: http://127.0.0.1:{smoke['port']}" in smoke["log"]
    assert str(TOKEN_FILE) in smoke["log"] and "RAY_AUTH_MODE=disabled" in smoke["log"]


def test_the_dashboard_answered_with_the_token_and_listed_the_trial_actors_by_the_models_name(smoke):
    assert smoke["dashboard"]["status"] == 200
    assert smoke["dashboard"]["trial_actors"] >= 1
    assert not any("ImplicitFunc" in name for name in smoke["dashboard"]["classes"])


def test_the_dashboard_refuses_a_request_without_the_token(smoke):
    status, actors = smoke["dashboard"]["without_token"]
    assert status in (401, 403) and actors == []


def test_the_dashboard_page_loads_in_chromium_and_shows_the_trial_actors(smoke):
    if smoke["page"] is None:
        require_chromium()  # skips without Chromium (fails under SNN_REQUIRE_BROWSER=1)
    assert smoke["page"] is not None, "Chromium is installed, yet the dashboard page was not captured"
    assert "fc_trial" in smoke["page"]["text"] and "ALIVE" in smoke["page"]["text"]  # a trial running
    assert smoke["page"]["path"].stat().st_size > 10_000  # a real screenshot, not an empty page


def test_trials_ran_and_asha_stopped_exactly_those_below_its_first_rung_cutoff(smoke):
    trials = pd.read_csv(smoke["dir"] / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == SMOKE_TRIALS
    assert set(trials["status"]) == {"TERMINATED"}
    metrics = pd.read_csv(smoke["dir"] / "trial_metrics.csv", dtype={"trial_id": str})
    first = metrics[metrics["epoch"] == 1].set_index("trial_id")["test_acc"]
    for i, row in enumerate(trials.itertuples()):  # one trial at a time: trials.csv's order is the rung's
        earlier = [first[t] for t in trials["trial_id"][:i]]
        below = bool(earlier) and first[row.trial_id] < np.nanpercentile(earlier, 50)  # ASHA, reduction factor 2
        assert below == (row.stopped_early and row.epochs == 1), row.trial_id
    assert (trials.loc[trials["stopped_early"], "epochs"] < SMOKE_EPOCHS).all()
    assert (trials.loc[~trials["stopped_early"], "epochs"] == SMOKE_EPOCHS).all()
    metrics = pd.read_csv(smoke["dir"] / "trial_metrics.csv")
    assert (
        metrics.groupby("trial_id")["epoch"].max().sort_index().tolist()
        == trials.set_index("trial_id")["epochs"].sort_index().tolist()
    )


def test_best_config_parses_and_is_the_best_trial(smoke):
    config = RunConfig.from_dict(json.loads((smoke["dir"] / "best_config.json").read_text()))
    trials = pd.read_csv(smoke["dir"] / "trials.csv")
    ran_to_the_end = trials[~trials["stopped_early"] & ~trials["diverged"]]
    best = ran_to_the_end.loc[ran_to_the_end["last_test_acc"].idxmax()]  # ranked by the last epoch, not the max
    assert config.model == "fc" and config.limit_train == 2000
    assert math.isclose(config.lr, best["config/lr"]) and config.net["T"] == best["config/T"]


def test_the_retrain_ran_and_the_summary_holds_its_test_accuracy(smoke):
    retrain = pd.read_csv(smoke["dir"] / "retrain" / "seed-0" / "metrics.csv")
    assert retrain["epoch"].tolist() == [1, 2, 3]
    assert (smoke["dir"] / "retrain" / "seed-0" / "checkpoint.pt").exists()
    summary = json.loads((smoke["dir"] / "summary.json").read_text())
    assert summary["retrain"]["max_test_acc"] == [retrain["test_acc"].max()]
    assert summary["retrain"]["final_test_acc"] == [retrain["test_acc"].iloc[-1]]
    assert summary["retrain"]["max_test_acc_mean"] > 0.5  # well above chance on 2,000 images
    assert summary["trials"]["total"] == SMOKE_TRIALS
    assert summary["trials"]["stopped_early"] == int(pd.read_csv(smoke["dir"] / "trials.csv")["stopped_early"].sum())
    assert set(summary["versions"]) >= {"torch", "spikingjelly", "ray", "optuna"}


def test_the_optuna_study_opens_with_optuna_and_matches_trials_csv(smoke):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(smoke["dir"] / "optuna.journal"))
    )
    study = optuna.load_study(study_name="smoke", storage=storage)
    trials = pd.read_csv(smoke["dir"] / "trials.csv")
    states = [t.state for t in study.trials]
    assert len(states) == len(trials)
    assert states.count(optuna.trial.TrialState.PRUNED) == trials["stopped_early"].sum()
    assert states.count(optuna.trial.TrialState.COMPLETE) == (~trials["stopped_early"]).sum()
    completed = sorted(t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert completed == pytest.approx(sorted(trials.loc[~trials["stopped_early"], "last_test_acc"]))


def load_study(smoke) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(smoke["dir"] / "optuna.journal"))
    )
    return optuna.load_study(study_name="smoke", storage=storage)


def test_every_epoch_a_trial_ran_reaches_the_study_once_with_its_step(smoke):
    metrics = pd.read_csv(smoke["dir"] / "trial_metrics.csv", dtype={"trial_id": str})
    study = load_study(smoke)
    assert len(study.trials) == metrics["trial_id"].nunique()
    for trial in study.trials:
        rows = metrics[metrics["trial_id"] == trial.user_attrs["ray_trial_id"]]
        assert trial.intermediate_values == pytest.approx(dict(zip(rows["epoch"], rows["test_acc"], strict=True)))


def test_the_seed_configuration_is_trial_0_and_marked(smoke):
    trials = pd.read_csv(smoke["dir"] / "trials.csv", dtype={"trial_id": str})
    seed = trials[trials["seed_trial"]]
    assert len(seed) == 1
    seed = seed.iloc[0]
    assert (seed["config/lr"], seed["config/T"]) == (1e-3, 100)  # the seed's FC-SNN: Adam 1e-3, T 100
    assert load_study(smoke).trials[0].user_attrs["ray_trial_id"] == seed["trial_id"]
    assert json.loads((smoke["dir"] / "summary.json").read_text())["seed_trial"]["trial_id"] == seed["trial_id"]


def test_the_search_built_its_report(smoke):
    """Every figure is drawn, but importance where fewer than two trials ran all their epochs: then it says so."""
    html = (smoke["dir"] / "report.html").read_text()
    complete = len(load_study(smoke).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    unranked = 0 if complete >= 2 else 1
    assert f'data-figure-count="{len(SECTIONS) - unranked}"' in html and f'data-missing-count="{unranked}"' in html
    if unranked:
        assert (
            f"parameter importance needs at least 2 trials that ran to their last epoch; the study has {complete}"
            in html
        )
    assert "smoke" in html and "92.89%" in html  # the experiment, and the seed report's FC-SNN figure apart


def test_every_pickle_the_search_left_is_signed_and_no_other_file_holds_one(smoke):
    """What Tuner.restore unpickles carries a digest of the user's key; is_pickled misses no file that holds one."""
    from tuning.search.digests import is_pickled, verify_experiment

    verify_experiment(smoke["dir"])
    tune = smoke["dir"] / "tune"
    signed = sorted(p.relative_to(tune).as_posix() for p in tune.rglob("*") if is_pickled(p))
    for path in tune.rglob("*"):
        data = path.read_bytes() if path.is_file() else b""
        holds_a_pickle = data[:2] in (b"\x80\x04", b"\x80\x05") or b"CLOUDPICKLE_FALLBACK" in data
        assert holds_a_pickle <= is_pickled(path), path
    assert {"tuner.pkl", "experiment_state", "search_gen_state", "searcher-state", "params.pkl"} <= {
        re.sub(r"-[0-9_-]+\.(json|pkl)$", "", name.split("/")[-1]) for name in signed
    }


def test_rays_state_of_the_search_lay_in_a_folder_only_the_user_can_enter(smoke):
    """Ray's session folders are 0777; a local search puts them in TMP/snn-tune-ray-<uid> (0700)."""
    import os
    import stat
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"snn-tune-ray-{os.geteuid()}"
    assert stat.S_IMODE(folder.lstat().st_mode) == 0o700 and folder.lstat().st_uid == os.geteuid()
    state = next((smoke["dir"] / "tune").glob("experiment_state-*.json")).name
    assert list(folder.glob(f"ray/session_*/artifacts/*/tune/driver_artifacts/{state}"))  # Ray's copy: in there


def test_an_existing_experiment_is_refused_without_resume(smoke, data_root):
    before = (smoke["dir"] / "summary.json").read_bytes()
    log = smoke["dir"].parent / "again.log"
    process = start_search(search_command("fc", smoke["dir"].parent, "smoke", "--preset", "smoke"), data_root, log)
    assert process.wait(timeout=120) == 2
    assert "already exists; pass --resume" in log.read_text()
    assert (smoke["dir"] / "summary.json").read_bytes() == before
