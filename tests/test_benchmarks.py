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
