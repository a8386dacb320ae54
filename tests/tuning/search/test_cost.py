"""The cost estimate: it times the trainer, and a search that fails first stops it at its next batch."""

from __future__ import annotations

import threading

import pytest

from tuning.search.cost import Stopped, estimate, seed_epoch_seconds
from tuning.search.settings import Settings
from tuning.search.space import default_space_path, load_space


def settings() -> Settings:
    return Settings(model="fc", metric="val_acc", seed=0, cpus_per_trial=1, gpus_per_trial=0, max_concurrent=0,
                    max_failures=0, retrain_seeds=3, retrain=True, device="cpu")


def test_the_estimate_times_the_seed_configuration_and_scales_it_to_the_budget(dataset):
    space = load_space(default_space_path("fc"), "fc")
    epoch_s = seed_epoch_seconds(space, settings(), dataset)
    assert 0 < epoch_s < 3600
    lines = estimate(space, settings(), epoch_s, concurrency=2)
    assert f"{space.budget.trials} trials x up to {space.budget.epochs_per_trial} epochs, 2 at once" in lines


def test_a_stopped_estimate_ends_at_its_next_batch(dataset):
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        seed_epoch_seconds(load_space(default_space_path("fc"), "fc"), settings(), dataset, stop)
