"""RunConfig: seed defaults per model, and validation errors that name the field, the rule and the value."""

from __future__ import annotations

import dataclasses
import json

import pytest

from snn.config import SEED_DEFAULTS, ConfigError, RunConfig, field_names


@pytest.mark.parametrize("model", ["fc", "csnn"])
def test_unset_fields_take_the_seed_defaults_of_the_model(model):
    config = RunConfig(model=model)
    for name, value in SEED_DEFAULTS[model].items():
        assert getattr(config, name) == value, name


def test_the_seed_configs_match_the_report():
    fc, csnn = RunConfig(model="fc"), RunConfig(model="csnn")
    assert (fc.T, fc.tau, fc.neuron, fc.optimizer, fc.lr, fc.batch_size, fc.epochs) == (100, 2.0, "lif", "adam", 1e-3, 128, 100)
    assert (csnn.T, csnn.channels, csnn.neuron, csnn.optimizer, csnn.lr, csnn.momentum, csnn.epochs) == (
        4, 64, "if", "sgd", 0.1, 0.9, 64)


def test_explicit_values_override_the_seed_defaults():
    config = RunConfig(model="csnn", T=8, neuron="plif", tau=3.0, optimizer="adamw", lr=1e-3)
    assert (config.T, config.neuron, config.tau, config.optimizer, config.lr) == (8, "plif", 3.0, "adamw", 1e-3)
    assert config.momentum == 0.9  # still the seed's


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().T = 5  # type: ignore[misc]


def test_dict_round_trip_through_json_gives_the_same_config():
    config = RunConfig(model="csnn", T=6, channels=16, surrogate="sigmoid", surrogate_alpha=3.0, limit_train=100)
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert list(config.to_dict()) == list(field_names())


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"T": 0}, "T", "must be >= 1"),
        ({"T": -3}, "T", "must be >= 1"),
        ({"T": 2.5}, "T", "must be an integer"),
        ({"T": True}, "T", "must be an integer"),
        ({"tau": 1.0}, "tau", "must be > 1"),
        ({"tau": 0.5}, "tau", "must be > 1"),
        ({"lr": 0.0}, "lr", "must be > 0"),
        ({"lr": -1e-3}, "lr", "must be > 0"),
        ({"lr": float("nan")}, "lr", "must be a finite number"),
        ({"surrogate_alpha": float("nan")}, "surrogate_alpha", "must be a finite number"),
        ({"seed": -1}, "seed", "must be in [0, 2**32 - 1]"),
        ({"seed": 2**32}, "seed", "must be in [0, 2**32 - 1]"),
        ({"batch_size": 60_001}, "batch_size", "must be in [1, 60000]"),
        ({"lr": float("inf")}, "lr", "must be a finite number"),
        ({"tau": float("inf")}, "tau", "must be a finite number"),
        ({"lr": "fast"}, "lr", "must be a number"),
        ({"channels": 0}, "channels", "must be >= 1"),
        ({"channels": -8}, "channels", "must be >= 1"),
        ({"momentum": 1.0}, "momentum", "must be in [0, 1)"),
        ({"weight_decay": -0.1}, "weight_decay", "must be >= 0"),
        ({"batch_size": 0}, "batch_size", "must be in [1, 60000]"),
        ({"epochs": 0}, "epochs", "must be >= 1"),
        ({"val_size": 60_000}, "val_size", "must be in [0, 60000)"),
        ({"limit_train": 0}, "limit_train", "must be >= 1"),
        ({"surrogate_alpha": 0.0}, "surrogate_alpha", "must be > 0"),
        ({"model": "resnet"}, "model", "must be one of fc, csnn"),
        ({"optimizer": "rmsprop"}, "optimizer", "must be one of sgd, adam, adamw"),
        ({"neuron": "izhikevich"}, "neuron", "must be one of lif, if, plif"),
        ({"surrogate": "relu"}, "surrogate", "must be one of atan, sigmoid"),
        ({"dataset": "cifar10"}, "dataset", "must be one of mnist, fashion-mnist"),
        ({"device": "tpu"}, "device", "must be one of auto, cpu, cuda"),
        ({"amp": "yes"}, "amp", "must be true or false"),
    ],
)
def test_a_bad_value_raises_an_error_naming_field_rule_and_value(changes, field, rule):
    with pytest.raises(ConfigError) as error:
        RunConfig(**{"model": "fc", **changes})
    (value,) = changes.values()
    assert error.value.field_name == field
    message = str(error.value)
    assert message.startswith(f"{field}: ")
    assert rule in message
    assert message.endswith(f"got {value!r}")


def test_from_dict_rejects_an_unknown_key_by_name():
    with pytest.raises(ConfigError, match=r"^learning_rate: is not a config field, got 0\.1$"):
        RunConfig.from_dict({"model": "fc", "learning_rate": 0.1})


def test_replace_validates_the_new_value():
    config = RunConfig(model="fc")
    assert config.replace(T=7).T == 7
    with pytest.raises(ConfigError, match=r"^T: must be >= 1 time step, got 0$"):
        config.replace(T=0)
