"""Chaos, short: a search SIGKILLed in the search, the retrain and the report, resumed each time, ends complete.

Meanwhile every trial raises once and has its worker SIGKILLed once, at random epochs.
``python -m benchmarks.chaos`` is the long version (more kills, a larger budget).
"""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.chaos import NAME, describe, run_chaos
from tuning import experiment as files

FLAGS = [
    "--preset",
    "smoke",
    "--max-concurrent",
    "2",
    "--max-failures",
    "3",
    "--epochs-per-trial",
    "2",
    "--retrain-epochs",
    "3",
]


@pytest.mark.slow
def test_a_search_killed_again_and_again_loses_nothing_and_ends_complete(tmp_path, data_root):
    chaos = run_chaos(tmp_path, kills=3, trials=2, seed=0, data_root=data_root, flags=FLAGS, search_delay=(4, 8))
    summary = describe(chaos, trials=2)
    assert chaos.failures == [], summary
    assert len(chaos.kills) == 3 and {"retrain"} <= set(chaos.kills), summary
    assert any(k.startswith("report") for k in chaos.kills), summary
    assert chaos.figures["trials_lost"] == 0, summary
    assert chaos.figures["crashes"] >= 1 and chaos.figures["worker_kills"] >= 1, summary  # faults inside trials too
    # each trial's epochs are kept once, 1 to its last, as trials.csv counts them; every kept epoch was trained,
    # and each epoch trained more than once is one of the extra epochs the kills cost
    kept = pd.read_csv(tmp_path / NAME / files.TRIAL_METRICS)
    assert not kept.duplicated(["trial_id", "epoch"]).any(), kept
    table = pd.read_csv(tmp_path / NAME / files.TRIALS).set_index("trial_id")
    for trial_id, epochs in kept.groupby("trial_id")["epoch"]:
        assert sorted(epochs) == list(range(1, len(epochs) + 1)), (trial_id, list(epochs))
        assert len(epochs) == table.loc[trial_id, "epochs"], (trial_id, list(epochs))
    trained = [tuple(line.split()) for line in (tmp_path / "epochs.log").read_text().splitlines()]
    assert {(t, str(e)) for t, e in zip(kept["trial_id"], kept["epoch"])} <= set(trained)
    assert chaos.figures["extra_epochs"] == len(trained) - len(kept), summary
