"""trials.csv rows, counts, the best trial and the retrain summary, from synthetic histories (no Ray, no torch)."""

from __future__ import annotations

import math

import pytest

from tuning.experiment import (
    best_trial,
    pareto_front,
    parse_selection,
    retrain_summary,
    select,
    spread,
    trial_counts,
    trial_row,
)

MAX_EPOCHS = 3


def outcome(trial_id: str, accs: list[float], status: str = "TERMINATED", diverged_at: int | None = None):
    records = [{"epoch": e + 1, "test_acc": a, "train_loss": 0.05, "diverged": False} for e, a in enumerate(accs)]
    if diverged_at is not None:
        records.append({"epoch": diverged_at, "train_loss": math.nan, "diverged": True})
    return trial_row(trial_id, status, {"lr": 0.01, "T": 4}, records, "test_acc", MAX_EPOCHS)


@pytest.fixture
def rows():
    return [
        outcome("full", [0.5, 0.7, 0.8]),
        outcome("stopped", [0.3]),
        outcome("nan", [0.4], diverged_at=2),
        outcome("crashed", [0.2], status="ERROR"),
    ]


def test_each_trial_row_says_how_it_ended(rows):
    table = {r["trial_id"]: r for r in rows}
    assert (table["full"]["stopped_early"], table["full"]["epochs"], table["full"]["best_test_acc"]) == (False, 3, 0.8)
    assert table["stopped"]["stopped_early"] and table["stopped"]["epochs"] == 1
    assert table["nan"]["diverged"] and not table["nan"]["stopped_early"] and table["nan"]["last_test_acc"] == 0.4
    assert table["crashed"]["status"] == "ERROR" and not table["crashed"]["stopped_early"]
    assert table["full"]["config/lr"] == 0.01 and table["full"]["config/T"] == 4


def test_counts_and_the_best_trial(rows):
    assert trial_counts(rows) == {
        "total": 4,
        "completed": 1,
        "stopped_early": 1,
        "errored": 1,
        "diverged": 1,
        "silent": 0,
        "unfinished": 0,
    }
    assert best_trial(rows, "test_acc")["trial_id"] == "full"


def test_flags_read_from_csv_text_count_alike(rows):
    as_text = [{k: str(v) for k, v in r.items()} for r in rows]
    assert trial_counts(as_text) == trial_counts(rows)


def test_retrain_summary_over_seeds():
    histories = {
        0: [{"test_acc": 0.90}, {"test_acc": 0.92}, {"test_acc": 0.91}],
        1: [{"test_acc": 0.93}, {"test_acc": 0.92}],
    }
    summary = retrain_summary(histories, epochs=3, checkpoint="retrain/seed-0/checkpoint.pt")
    assert summary["max_test_acc"] == [0.92, 0.93] and summary["final_test_acc"] == [0.91, 0.92]
    assert summary["max_test_acc_mean"] == pytest.approx(0.925) and summary["max_test_acc_std"] == pytest.approx(0.005)
    assert summary["final_test_acc_mean"] == pytest.approx(0.915)
    assert "final_test_synops_per_image_mean" not in summary  # these histories carry no spike counts


def test_retrain_summary_carries_the_spike_costs_of_the_last_epoch():
    histories = {
        0: [{"test_acc": 0.9, "test_synops_per_image": 100.0}, {"test_acc": 0.91, "test_synops_per_image": 80.0}],
        1: [{"test_acc": 0.92, "test_synops_per_image": 120.0}],
    }
    summary = retrain_summary(histories, epochs=2, checkpoint="")
    assert summary["final_test_synops_per_image_mean"] == pytest.approx(100.0)


def test_the_best_trial_is_ranked_by_its_last_epoch_not_a_lucky_one():
    """'lucky' peaked at 0.95 in epoch 2 and ended at 0.80; 'steady' ended at 0.90: max-over-epochs would pick lucky."""
    rows = [
        trial_row("lucky", "TERMINATED", {}, curve([0.6, 0.95, 0.80]), "test_acc", MAX_EPOCHS),
        trial_row("steady", "TERMINATED", {}, curve([0.7, 0.85, 0.90]), "test_acc", MAX_EPOCHS),
        trial_row("stopped", "TERMINATED", {}, curve([0.97]), "test_acc", MAX_EPOCHS),
    ]
    assert max(rows, key=lambda r: r["best_test_acc"])["trial_id"] == "stopped"
    best = best_trial(rows, "test_acc")
    assert best["trial_id"] == "steady" and best["best_test_acc"] == 0.90 and rows[0]["best_test_acc"] == 0.95


def test_silent_trials_are_counted_and_not_called_stopped_early():
    records = [{"epoch": 1, "test_acc": 0.098, "silent": True}]
    row = trial_row("dead", "TERMINATED", {}, records, "test_acc", MAX_EPOCHS)
    assert row["silent"] and not row["stopped_early"]
    assert trial_counts([row])["silent"] == 1 and trial_counts([row])["completed"] == 0


def curve(accs: list[float]) -> list[dict]:
    return [{"epoch": e + 1, "test_acc": a} for e, a in enumerate(accs)]


def point(trial_id: str, acc: float, synops: float, status: str = "TERMINATED", stopped: bool = False) -> dict:
    return {
        "trial_id": trial_id,
        "status": status,
        "stopped_early": stopped,
        "diverged": False,
        "silent": False,
        "last_test_acc": acc,
        "last_test_synops_per_image": synops,
    }


FRONT_ROWS = [
    point("accurate", 0.99, 9e6),
    point("knee", 0.985, 1e6),
    point("cheap", 0.90, 1e5),
    point("dominated", 0.95, 5e6),
    point("stopped", 0.999, 1e4, stopped=True),
    point("errored", 0.999, 1e3, status="ERROR"),
]


def test_the_pareto_front_holds_the_undominated_trials_that_ran_to_the_end():
    front = pareto_front(FRONT_ROWS, "last_test_acc", "last_test_synops_per_image")
    assert [r["trial_id"] for r in front] == ["accurate", "knee", "cheap"]


@pytest.mark.parametrize(
    ("rule", "chosen"),
    [
        ("max-accuracy", "accurate"),
        ("knee", "knee"),
        ("synops<=2e6", "knee"),
        ("synops<=100000", "cheap"),
        ("accuracy>=0.98", "knee"),
        ("accuracy>=99%", "accurate"),
        ("synops<=10", None),
        ("accuracy>=0.999", None),
    ],
)
def test_select_picks_the_point_each_rule_names(rule, chosen):
    front = pareto_front(FRONT_ROWS, "last_test_acc", "last_test_synops_per_image")
    picked = select(front, rule, "last_test_acc", "last_test_synops_per_image")
    assert (picked or {}).get("trial_id") == chosen


@pytest.mark.parametrize("rule", ["fast", "synops>=5", "accuracy<=0.9", "synops<=lots", "accuracy>=-1"])
def test_a_bad_selection_is_refused(rule):
    with pytest.raises(ValueError, match="is not a selection"):
        parse_selection(rule)


@pytest.mark.parametrize(
    ("k", "places"), [(1, [0]), (2, [0, 4]), (3, [0, 2, 4]), (5, [0, 1, 2, 3, 4]), (9, [0, 1, 2, 3, 4])]
)
def test_spread_takes_points_evenly_along_the_front_ends_included(k, places):
    front = [{"trial_id": str(i)} for i in range(5)]
    assert [int(r["trial_id"]) for r in spread(front, k)] == places
