"""The retrain trains every epoch of every seed asked for, even a seed whose network starts silent."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from snn import RunConfig, make_splits
from snn.training import train
from tuning import experiment as files
from tuning.search.inputs import InputError, Options, checked_input
from tuning.search.retrain import retrain
from tuning.search.state import create_experiment

# An lr far too small to move the weights: the FC-SNN stays as silent as it starts, and with 100 batches
# of 8 images its first epoch is long enough for the silence probe (batches 61-80) to judge it.
SILENT = RunConfig(model="fc", net={"T": 8}, lr=1e-9, batch_size=8, limit_train=800, limit_test=200, epochs=2)


def test_a_configuration_the_silence_rule_stops_is_retrained_for_all_its_epochs(tmp_path, dataset):
    history = train(SILENT, make_splits(dataset, SILENT))
    assert history.status == "silent" and len(history.epochs) == 1  # what a search trial or snn.train does

    result = retrain(tmp_path, SILENT.to_dict(), epochs=2, seeds=2, data=dataset)
    metrics = pd.read_csv(tmp_path / files.RETRAIN_METRICS)
    assert sorted(zip(metrics["seed"], metrics["epoch"])) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert not metrics["silent"].any() and metrics["test_acc"].notna().all()
    assert result["epochs"] == 2 and result["seeds"] == [0, 1]


def test_resume_refuses_a_flag_that_asks_for_other_settings_than_the_search_was_started_with(tmp_path, data_root):
    """--resume continues with search.json's settings: a flag asking for others is one line, not ignored."""
    started = Options(model="fc", preset="smoke", results_dir=tmp_path, name="s", data_dir=data_root)
    experiment, space, settings, _ = checked_input(started)
    create_experiment(experiment, space, settings)
    same = dataclasses.replace(started, resume=True, retrain_epochs=space.budget.retrain_epochs)
    assert checked_input(same)[2] == settings  # the same value again is fine, as the chaos benchmark passes it
    for flag, value, saved in (
        ("retrain_epochs", 9, space.budget.retrain_epochs),
        ("trials", 40, space.budget.trials),
        ("metric", "val_acc", "test_acc"),
        ("retrain_seeds", 5, settings.retrain_seeds),
    ):
        with pytest.raises(InputError) as refused:
            checked_input(dataclasses.replace(started, resume=True, **{flag: value}))
        assert str(refused.value) == (
            f"--{flag.replace('_', '-')} {value}: --resume continues the search as it was started "
            f"({flag} {saved}); drop the flag, or start a new search under another --name"
        )
