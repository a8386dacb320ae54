"""The live table and the flags a person types about time, on made-up trials (no Ray started)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from tuning.search.inputs import parse_duration
from tuning.search.progress import LiveTable


def trial(trial_id: str, status: str, epochs: int, acc: float | None = None, seconds: float = 0.0, **config):
    result = {"epoch": epochs, "test_acc": acc, "time_total_s": seconds} if epochs else {}
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=result, config=config)


def test_the_table_counts_trials_estimates_the_time_left_and_shows_progress_within_the_epoch():
    table = LiveTable("test_acc", total=6, max_epochs=4, concurrency=2, params=["lr", "tau"])
    trials = [
        trial("done", "TERMINATED", 4, 0.91, 40.0, lr=0.01),
        trial("asha", "TERMINATED", 1, 0.50, 10.0, lr=0.1),
        trial("busy", "RUNNING", 2, 0.88, 20.0, lr=0.002, neuron="if"),
        trial("new", "PENDING", 0),
    ]
    text = table.render(trials, {"busy": (3, 50, 200)})
    head, row = text.splitlines()
    assert "2 of 6 trials done (1 stopped early by ASHA, 0 silent, 0 errored), 1 running, 3 to start" in head
    # 70 s over 7 epochs = 10 s an epoch; 3 trials to start x 4 epochs + 2 epochs left of busy = 14, 2 at once
    assert head.endswith("at most ~70 s left")
    assert row.split() == ["busy", "epoch", "3/4", "25%", "of", "it", "test_acc", "88.00%", "lr=0.002"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("5", 300), ("0.5h", 1800)]
)
def test_time_budgets_read_as_a_person_writes_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0m", "-5m", "1d"])
def test_a_time_budget_that_is_not_a_duration_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_rays_failed_restore_is_hidden_only_within_the_block_that_asks():
    import logging

    from tuning.search.progress import ray_failed_restore_hidden

    logger = logging.getLogger("ray.tune.execution.tune_controller")
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "Failed to restore the run state.", (), None)
    with ray_failed_restore_hidden(True):
        assert not logger.filter(record)
    with ray_failed_restore_hidden(False):
        assert logger.filter(record)
    assert logger.filter(record)  # a later search in the same process still shows it


def test_rays_resume_advice_is_hidden_by_one_filter_however_many_searches_a_process_runs():
    import logging

    from tuning.search.progress import hide_ray_restore_advice

    logger = logging.getLogger("ray.tune.tune")
    advice = logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, "Resume experiment with: Tuner.restore(...)", (), None
    )
    other = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "Total run time: 3 s", (), None)
    before = len(logger.filters)
    hide_ray_restore_advice()
    hide_ray_restore_advice()
    assert len(logger.filters) <= before + 1
    assert not logger.filter(advice) and logger.filter(other)
