"""The benchmark scripts start: each answers --help (an import or a renamed entry point breaks this)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module",
    [
        "train_speed",
        "search_overhead",
        "search_quality",
        "chaos",
        "gpu_check",
        "linear_ceiling",
        "profile_step",
        "kernel_checks",
        "kernel_flags",
        "numba_kernels",
    ],
)
def test_every_benchmark_answers_help(module):
    run = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout


def test_search_quality_reuses_a_search_retrain_only_for_the_seed_network_itself():
    """The seed arm is not retrained again when a search chose exactly the seed's network."""
    from benchmarks.search_quality import _same_network
    from snn.config import RunConfig

    seed = RunConfig(model="fc", val_size=5000, epochs=30)
    # the seed's network with its defaults spelled out, as a search's trial 0 samples them (ATan's alpha 2.0)
    chosen = {**seed.to_dict(), "net": {"T": 100, "hidden_layers": 0, "surrogate_alpha": 2.0}, "device": "cpu"}
    assert _same_network(chosen, seed)
    assert not _same_network({**chosen, "seed": 3}, seed)  # its retrain ran other seeds
    assert not _same_network({**chosen, "lr": 2e-3}, seed)
    assert not _same_network({**chosen, "net": {"surrogate_alpha": 3.0}}, seed)
    assert not _same_network({**chosen, "net": {"hidden_layers": 1}}, seed)
    assert not _same_network({**chosen, "limit_train": 5000}, seed)  # other data: another experiment


def test_train_speed_without_mnist_says_so_in_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_speed", "--data-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.count("\n") == 1 and "mnist files not found" in run.stderr and "Traceback" not in run.stderr


def test_search_quality_retrains_a_finished_search_at_a_new_budget_without_searching_again(
    tmp_path, data_root, monkeypatch
):
    """A search whose trials all finished keeps them: a retrain of other epochs or seeds retrains its choice."""
    import argparse
    import json
    import types

    import pandas as pd

    from benchmarks import search_quality
    from snn.config import RunConfig
    from tuning import experiment as files
    from tuning.search.space import default_space_path, load_space

    space = load_space(default_space_path("fc"), "fc")
    experiment = tmp_path / "tpe"
    experiment.mkdir()
    chosen = RunConfig(model="fc", net={"T": 2}, limit_train=256, limit_test=100, epochs=10).to_dict()
    (experiment / files.BEST_CONFIG).write_text(json.dumps(chosen))
    statuses = ["TERMINATED"] * space.budget.trials
    pd.DataFrame({"trial_id": [f"t{i}" for i in range(len(statuses))], "status": statuses}).to_csv(
        experiment / files.TRIALS, index=False
    )
    (experiment / files.SUMMARY).write_text(json.dumps({"status": "complete", "search_seconds": 12.5,
                                                         "retrain": {"epochs": 10, "seeds": [0, 1, 2]}}))  # fmt: skip
    searching = types.SimpleNamespace(run=lambda *a, **k: pytest.fail(f"searched again: {a}"))
    monkeypatch.setattr(search_quality, "subprocess", searching)
    args = argparse.Namespace(out=tmp_path, seeds=2, trials=None, data_dir=data_root)

    summary = search_quality._search(args, "tpe", 1, space)
    folder = experiment / "retrain-1x2"
    assert summary["retrain_folder"] == str(folder) and summary["search_seconds"] == 12.5
    assert summary["retrain"]["epochs"] == 1 and summary["retrain"]["seeds"] == [0, 1]
    assert len(pd.read_csv(folder / files.RETRAIN_METRICS)) == 2  # 1 epoch x 2 seeds
    assert search_quality._search(args, "tpe", 1, space) == summary  # done: read back, not retrained

    pd.DataFrame({"trial_id": ["t0"], "status": ["RUNNING"]}).to_csv(experiment / files.TRIALS, index=False)
    assert search_quality._chosen_by_finished_search(experiment, space.budget.trials) is None  # cut short: resumed
