"""The cost estimate: it times the trainer, and a search that fails first stops it at its next batch."""

from __future__ import annotations

import threading
import types

import pytest

from snn.data import make_splits
from tuning.search import cost
from tuning.search.cost import Stopped, estimate, seed_epoch_seconds
from tuning.search.settings import Settings
from tuning.search.space import default_space_path, load_space


def settings() -> Settings:
    return Settings(
        model="fc",
        metric="val_acc",
        seed=0,
        cpus_per_trial=1,
        gpus_per_trial=0,
        max_concurrent=0,
        max_failures=0,
        retrain_seeds=3,
        retrain=True,
        device="cpu",
    )


def test_the_estimate_times_the_seed_configuration_and_scales_it_to_the_budget(dataset):
    space = load_space(default_space_path("fc"), "fc")
    epoch_s = seed_epoch_seconds(space, settings(), dataset)
    assert 0 < epoch_s < 3600
    lines = estimate(space, settings(), epoch_s, concurrency=2)
    assert f"{space.budget.trials} trials x up to {space.budget.epochs_per_trial} epochs, 2 at once" in lines


def test_an_epoch_is_the_fastest_timed_batch_scaled_to_the_training_images_and_a_third_of_the_evaluated(
    dataset, monkeypatch
):
    """A trainer whose batches end at known times: 3 s to warm up, then 0.5, 0.75 and 0.75 s."""
    ends = iter([0.0, 3.0, 3.5, 4.25, 5.0])
    monkeypatch.setattr(cost, "time", types.SimpleNamespace(perf_counter=lambda: next(ends)))
    trained = []

    def fake_train(config, splits, on_batch, silence, network=None):
        trained.append(len(splits.train))
        for i in range(4):
            on_batch(i, 4, 0.0)

    monkeypatch.setattr(cost, "train", fake_train)
    space = load_space(default_space_path("fc"), "fc")
    epoch_s = seed_epoch_seconds(space, settings(), dataset)
    config = space.config_for(space.seed_point()[0], device="cpu", epochs=1)
    splits = make_splits(dataset, config)
    evaluated = len(splits.test) + (len(splits.val) if splits.val is not None else 0)
    assert trained == [4 * config.batch_size]  # the timed batches and one to warm up
    assert epoch_s == pytest.approx(0.5 / config.batch_size * (len(splits.train) + evaluated / 3))


@pytest.mark.parametrize("gpu", [False, True])
def test_the_estimate_multiplies_the_epoch_by_the_trial_epochs_and_the_retrain(gpu, monkeypatch):
    monkeypatch.setattr(cost.torch.cuda, "is_available", lambda: gpu)
    space = load_space(default_space_path("fc"), "fc")
    budget = space.budget
    lines = estimate(space, settings(), 90.0, concurrency=3)
    search_h = budget.trials * budget.epochs_per_trial * 90.0 / 3 / 3600
    retrain_s = budget.retrain_epochs * 3 * 90.0
    assert f"budget: at most {budget.trials * budget.epochs_per_trial} trial-epochs" in lines
    assert f"takes ~2 min here (3 batches timed), so the search takes up to ~{search_h:.1f} h" in lines
    assert (
        f"the retrain ~{retrain_s / 3600:.1f} h" if retrain_s >= 3600 else f"the retrain ~{retrain_s / 60:.0f} min"
    ) in lines
    assert ("warning: this machine has no GPU" in lines) is (not gpu and search_h >= 1)


def test_a_stopped_estimate_ends_at_its_next_batch(dataset):
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        seed_epoch_seconds(load_space(default_space_path("fc"), "fc"), settings(), dataset, stop)
