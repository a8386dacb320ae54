"""RunConfig: the trainer's seed defaults per model, the network's parameters in ``net``, and validation
errors that name the field, the rule and the value (the trainer's when the config is built, the
network's when the network is built)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from spikingjelly.activation_based.neuron import ParametricLIFNode

from snn.config import SEED_DEFAULTS, ConfigError, RunConfig, field_names
from snn.networks import build_model, resolve


@pytest.mark.parametrize("model", ["fc", "csnn"])
def test_unset_fields_take_the_seed_defaults_of_the_model(model):
    config = RunConfig(model=model)
    for name, value in SEED_DEFAULTS[model].items():
        assert getattr(config, name) == value, name
    assert config.net == {}, "the network is the factory's defaults"


def test_the_seed_configs_match_the_report():
    fc, csnn = RunConfig(model="fc"), RunConfig(model="csnn")
    fc_net, csnn_net = resolve("fc").defaults_for(fc.net), resolve("csnn").defaults_for(csnn.net)
    assert (fc_net["T"], fc_net["tau"], fc_net["neuron"], fc.optimizer, fc.lr, fc.batch_size, fc.epochs) == (
        100,
        2.0,
        "lif",
        "adam",
        1e-3,
        128,
        100,
    )
    assert (
        csnn_net["T"],
        csnn_net["channels"],
        csnn_net["neuron"],
        csnn.optimizer,
        csnn.lr,
        csnn.momentum,
        csnn.epochs,
    ) == (4, 64, "if", "sgd", 0.1, 0.9, 64)


def test_explicit_values_override_the_seed_defaults():
    config = RunConfig(model="csnn", net={"T": 8, "neuron": "plif", "tau": 3.0}, optimizer="adamw", lr=1e-3)
    assert (config.net["T"], config.net["neuron"], config.net["tau"], config.optimizer, config.lr) == (
        8,
        "plif",
        3.0,
        "adamw",
        1e-3,
    )
    assert config.momentum == 0.9  # still the seed's
    network = build_model(config)
    assert network.T == 8 and isinstance(network.sn1, ParametricLIFNode)  # the values reach the network
    assert 1 / torch.sigmoid(network.sn1.w).item() == pytest.approx(3.0)
    assert resolve("csnn").defaults_for(config.net)["channels"] == 64  # the others stay the factory's


def test_with_net_sets_some_parameters_and_keeps_the_others():
    config = RunConfig(model="fc", net={"T": 8, "tau": 3.0})
    changed = config.with_net(T=3, neuron="if")
    assert changed.net == {"T": 3, "tau": 3.0, "neuron": "if"}
    assert config.net == {"T": 8, "tau": 3.0}, "the original is unchanged"
    assert changed.replace(net={}).net == {}


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().lr = 5  # type: ignore[misc]


def test_net_is_a_copy_the_caller_cannot_change_afterwards():
    net = {"T": 8}
    config = RunConfig(model="fc", net=net)
    net["T"] = 9
    assert config.net == {"T": 8}


def test_dict_round_trip_through_json_gives_the_same_config():
    config = RunConfig(
        model="csnn", net={"T": 6, "channels": 16, "surrogate": "sigmoid", "surrogate_alpha": 3.0}, limit_train=100
    )
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert list(config.to_dict()) == list(field_names())
    assert config.to_dict()["net"] == {"T": 6, "channels": 16, "surrogate": "sigmoid", "surrogate_alpha": 3.0}


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"lr": 0.0}, "lr", "must be > 0"),
        ({"lr": -1e-3}, "lr", "must be > 0"),
        ({"lr": float("nan")}, "lr", "must be a finite number"),
        ({"seed": -1}, "seed", "must be in [0, 2**32 - 1]"),
        ({"seed": 2**32}, "seed", "must be in [0, 2**32 - 1]"),
        ({"lr": float("inf")}, "lr", "must be a finite number"),
        ({"lr": "fast"}, "lr", "must be a number"),
        ({"momentum": 1.0}, "momentum", "must be in [0, 1)"),
        ({"weight_decay": -0.1}, "weight_decay", "must be >= 0"),
        ({"batch_size": 0}, "batch_size", "must be >= 1"),
        ({"batch_size": 2.5}, "batch_size", "must be an integer"),
        ({"epochs": 0}, "epochs", "must be >= 1"),
        ({"val_size": -1}, "val_size", "must be >= 0"),
        ({"limit_train": 0}, "limit_train", "must be >= 1"),
        ({"model": "resnet"}, "model", "must be one of fc, csnn or package.module:function"),
        ({"optimizer": "rmsprop"}, "optimizer", "must be one of sgd, adam, adamw"),
        ({"loss": "hinge"}, "loss", "must be one of mse, ce"),
        ({"dataset": "imagenet"}, "dataset", "must be one of mnist, fashion-mnist, kmnist, cifar10"),
        ({"device": "tpu"}, "device", "must be one of auto, cpu, cuda"),
        ({"amp": "yes"}, "amp", "must be true or false"),
        ({"output_layer": ""}, "output_layer", "must be a module name"),
        ({"net": [("T", 3)]}, "net", "must be a mapping of the network factory's arguments"),
        ({"net": {"T": float("nan")}}, "T", "must be a finite number"),
        ({"net": {"surrogate_alpha": float("nan")}}, "surrogate_alpha", "must be a finite number"),
        ({"net": {"tau": float("inf")}}, "tau", "must be a finite number"),
        ({"net": {"channels": {"a": 1}}}, "channels", "must be a number, text, true/false, null or a list"),
        ({"net": {"not a name": 1}}, "net", "keys must be parameter names"),
    ],
)
def test_a_bad_trainer_value_raises_an_error_naming_field_rule_and_value(changes, field, rule):
    with pytest.raises(ConfigError) as error:
        RunConfig(**{"model": "fc", **changes})
    (value,) = changes.values()
    if "net" in changes and isinstance(value, dict):  # a value inside net is named by its parameter
        (value,) = value.keys() if field == "net" else value.values()
    assert error.value.field_name == field
    message = str(error.value)
    assert message.startswith(f"{field}: ")
    assert rule in message
    assert message.endswith(f"got {value!r}")


@pytest.mark.parametrize(
    ("model", "net", "field", "rule"),
    [
        ("fc", {"T": 0}, "T", "must be >= 1 time step"),
        ("fc", {"T": -3}, "T", "must be >= 1"),
        ("fc", {"T": 2.5}, "T", "must be an integer"),
        ("fc", {"T": True}, "T", "must be an integer"),
        ("fc", {"tau": 1.0}, "tau", "must be > 1 (spikingjelly's LIF rule)"),
        ("fc", {"tau": 0.5}, "tau", "must be > 1"),
        ("fc", {"surrogate_alpha": 0.0}, "surrogate_alpha", "must be > 0"),
        ("fc", {"neuron": "izhikevich"}, "neuron", "must be one of lif, if, plif"),
        ("fc", {"surrogate": "relu"}, "surrogate", "must be one of atan, sigmoid"),
        ("fc", {"encoding": "latency"}, "encoding", "must be one of poisson, direct"),
        ("fc", {"hidden_layers": 4}, "hidden_layers", "must be <= 3"),
        ("fc", {"width_1": 0}, "width_1", "must be >= 1"),
        ("csnn", {"channels": 0}, "channels", "must be >= 1"),
        ("csnn", {"channels": -8}, "channels", "must be >= 1"),
        ("csnn", {"channels_2": 0}, "channels_2", "must be >= 1"),
        ("csnn", {"blocks": 4}, "blocks", "must be <= 3"),
        ("csnn", {"kernel_size": 4}, "kernel_size", "must be one of 3, 5"),
        ("csnn", {"dropout": 1.0}, "dropout", "must be < 1"),
        ("csnn", {"tau": 1.0}, "tau", "must be > 1 (spikingjelly's LIF rule)"),
    ],
)
def test_a_bad_network_value_is_refused_when_the_network_is_built(model, net, field, rule):
    config = RunConfig(model=model, net=net)  # the config holds the factory's arguments unchecked
    for check in (lambda: resolve(model).check(config.net), lambda: build_model(config)):
        with pytest.raises(ConfigError) as error:
            check()
        (value,) = net.values()
        assert error.value.field_name == field
        message = str(error.value)
        assert message.startswith(f"{field}: ")
        assert rule in message
        assert message.endswith(f"got {value!r}")


def test_a_name_the_factory_does_not_take_is_refused_with_its_signature():
    with pytest.raises(ConfigError, match=r"^channels: is not a parameter of fc\(T, tau, neuron, .*\), got 8$"):
        build_model(RunConfig(model="fc", net={"channels": 8}))


def test_from_dict_rejects_an_unknown_key_by_name():
    with pytest.raises(ConfigError, match=r"^learning_rate: is not a config field, got 0\.1$"):
        RunConfig.from_dict({"model": "fc", "learning_rate": 0.1})
    with pytest.raises(ConfigError, match=r"^T: is not a config field, got 3$"):
        RunConfig.from_dict({"model": "fc", "T": 3})  # a network parameter lives in net


def test_replace_validates_the_new_value():
    config = RunConfig(model="fc")
    assert config.replace(lr=0.5).lr == 0.5
    with pytest.raises(ConfigError, match=r"^epochs: must be >= 1, got 0$"):
        config.replace(epochs=0)
    with pytest.raises(ConfigError, match=r"^T: must be >= 1 time step, got 0$"):
        build_model(config.with_net(T=0))
