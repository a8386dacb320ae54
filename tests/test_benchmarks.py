"""The benchmark scripts start: each answers --help (an import or a renamed entry point breaks this)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["train_speed", "search_overhead", "search_quality", "chaos", "gpu_check"])
def test_every_benchmark_answers_help(module):
    run = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout
