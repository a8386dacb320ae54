"""A network of your own: the factory contract, routing, the probe, and every broken factory as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snn import RunConfig
from snn.config import ConfigError
from snn.data import DataError, read_dataset
from snn.networks import NetworkError, build_model, config_from_flat, probe, resolve, route
from tests.snn import factories

ROOT = Path(__file__).resolve().parents[2]
FACTORIES = "tests.snn.factories"


def images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_a_reference_and_a_callable_resolve_to_the_same_factory():
    by_name, by_callable = resolve(f"{FACTORIES}:tiny"), resolve(factories.tiny)
    assert by_name.factory is by_callable.factory is factories.tiny
    assert by_callable.name == f"{FACTORIES}:tiny"
    assert by_name.parameters == ("width", "T") and by_name.data_arguments == ("input_shape", "classes")
    assert dict(by_name.defaults) == {"width": 2, "T": 2}
    assert resolve("fc").factory.__name__ == "fc_snn" and resolve("csnn").factory.__name__ == "csnn"


def test_the_data_gives_the_image_shape_and_the_classes():
    net = build_model(RunConfig(model=f"{FACTORIES}:tiny", net={"width": 3}), (3, 8, 8), 4)
    assert net.fc.in_features == 3 * 8 * 8 and net.fc.out_features == 4 * 3
    assert net(torch.rand(5, 3, 8, 8)).shape == (5, 4)


def test_values_go_to_the_trainer_or_the_network_and_names_neither_takes_are_refused():
    network = resolve(f"{FACTORIES}:tiny")
    trainer, net = route({"lr": 0.01, "width": 4, "T": 3, "optimizer": "sgd"}, network)
    assert trainer == {"lr": 0.01, "optimizer": "sgd"} and net == {"width": 4, "T": 3}
    with pytest.raises(
        ConfigError,
        match=r"^depth: is neither a trainer setting \(a RunConfig field: python -m "
        r"snn\.train --help\) nor a parameter of tests\.snn\.factories:tiny\(width, "
        r"T\), got 2$",
    ):
        route({"depth": 2}, network)
    with pytest.raises(ConfigError, match="classes: comes from the data"):
        route({"classes": 3}, network)
    config = config_from_flat(f"{FACTORIES}:tiny", {"lr": 0.5, "width": 6})
    assert (config.lr, config.optimizer, config.epochs, config.net) == (0.5, "adam", 10, {"width": 6})


@pytest.mark.parametrize(
    "reference, message",
    [
        (
            "nowhere.at_all:net",
            "model nowhere.at_all:net: cannot import nowhere.at_all (No module named 'nowhere'); the "
            "module must be importable from the current folder or PYTHONPATH",
        ),
        (f"{FACTORIES}:missing", f"model {FACTORIES}:missing: {FACTORIES} has no missing"),
        (f"{FACTORIES}:Tiny.T", f"model {FACTORIES}:Tiny.T: {FACTORIES} has no Tiny.T"),
        ("fcc", "model 'fcc': must be one of fc, csnn or package.module:function"),
    ],
)
def test_a_factory_that_cannot_be_found_is_one_line(reference, message):
    resolve.__globals__["_resolved"].cache_clear()
    with pytest.raises(NetworkError) as error:
        resolve(reference)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "factory, message",
    [
        ("raises", "model tests.snn.factories:raises: the factory raised ValueError: width must be even"),
        ("not_a_module", "model tests.snn.factories:not_a_module: the factory returned a str, not a torch.nn.Module"),
        (
            "wrong_shape",
            "model tests.snn.factories:wrong_shape: forward returned shape [2, 11] for 2 images; it must "
            "return [N, classes] = [2, 10]",
        ),
        (
            "no_spiking_layer",
            "model tests.snn.factories:no_spiking_layer: Sequential holds no spikingjelly neuron "
            "module (spiking layer); snn-tune trains spiking networks",
        ),
        (
            "output_not_last",
            "its last spiking layer defined, unused, is not the last to run (sn); set output_layer: sn",
        ),
    ],
)
def test_a_broken_factory_is_one_line_from_the_probe(factory, message):
    with pytest.raises(NetworkError) as error:
        probe(RunConfig(model=f"{FACTORIES}:{factory}"), images(), 10)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_required_parameter_must_be_given():
    with pytest.raises(ConfigError, match="depth: tests.snn.factories:needs_depth needs it"):
        probe(RunConfig(model=f"{FACTORIES}:needs_depth"), images(), 10)
    found = probe(RunConfig(model=f"{FACTORIES}:needs_depth", net={"depth": 3}), images(), 10)
    assert found.steps == 3 and found.output_layer == "sn"


def test_the_output_layer_may_be_named():
    found = probe(RunConfig(model=f"{FACTORIES}:output_not_last", output_layer="sn"), images(), 10)
    assert found.output_layer == "sn"
    with pytest.raises(
        NetworkError, match="output_layer 'sn9' is not a spiking layer of the network; its spiking layers: sn, unused"
    ):
        probe(RunConfig(model=f"{FACTORIES}:output_not_last", output_layer="sn9"), images(), 10)


def test_an_unknown_loss_is_refused():
    with pytest.raises(ConfigError, match="loss: must be one of mse, ce, got 'nll'"):
        RunConfig(model="fc", loss="nll")


def run_train(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snn.train", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_python_m_snn_train_trains_a_factory_of_your_own_with_its_parameters_as_flags(tmp_path):
    out = tmp_path / "run"
    result = run_train(
        f"{FACTORIES}:tiny",
        "--width",
        "3",
        "--T",
        "2",
        "--dataset",
        f"{FACTORIES}:data_factory",
        "--epochs",
        "2",
        "--loss",
        "ce",
        "--lr",
        "0.01",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["model"], config["net"], config["dataset"], config["loss"]) == (
        f"{FACTORIES}:tiny",
        {"width": 3, "T": 2},
        f"{FACTORIES}:data_factory",
        "ce",
    )
    assert "1x12x12, 3 classes" in result.stdout
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["data"] == {"input_shape": [1, 12, 12], "classes": 3}
    help_text = run_train(f"{FACTORIES}:tiny", "--help").stdout
    assert "--width WIDTH" in help_text and "--T T" in help_text


@pytest.mark.parametrize(
    "args, fragment",
    [
        ((f"{FACTORIES}:raises",), "the factory raised ValueError: width must be even"),
        (("nowhere.at_all:net",), "cannot import nowhere.at_all"),
        ((f"{FACTORIES}:tiny", "--depth", "3"), "unrecognized arguments: --depth 3"),
        ((f"{FACTORIES}:tiny", "--dataset", f"{FACTORIES}:broken_data"), "10 train images but 9 labels"),
        (("fc", "--backend", "cuda"), "backend: cuda runs on CUDA only"),
    ],
)
def test_bad_input_to_python_m_snn_train_is_one_line_and_writes_nothing(tmp_path, data_root, args, fragment):
    result = run_train(
        *args, "--out", tmp_path / "run", "--device", "cpu" if "cuda" not in args else "auto", "--data-dir", data_root
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_a_config_file_may_give_the_networks_parameters_flat(tmp_path):
    from snn.cli import load_config_file

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": "csnn", "T": 2, "blocks": 3, "lr": 0.01}))
    config = load_config_file(path)
    assert config.net == {"T": 2, "blocks": 3} and config.lr == 0.01
    path.write_text(json.dumps({"model": "csnn", "net": {"T": 2}, "widht": 3}))
    with pytest.raises(Exception, match="widht: is neither a trainer setting"):
        load_config_file(path)


def test_a_data_factory_gives_its_shape_and_classes(tmp_path):
    data = read_dataset(tmp_path, f"{FACTORIES}:data_factory")
    assert (data.input_shape, data.classes, len(data.train), len(data.test)) == ((1, 12, 12), 3, 200, 100)
    with pytest.raises(DataError, match="10 train images but 9 labels; lengths must match"):
        read_dataset(tmp_path, f"{FACTORIES}:broken_data")


def test_the_trainer_resets_a_network_that_does_not_reset_itself(dataset):
    """Evaluated twice on the same images, a network whose forward keeps its neurons' state gives the same
    figures only when something resets it between batches: the evaluator does."""
    from snn.data import Split
    from snn.training import evaluate

    config = RunConfig(model=f"{FACTORIES}:stateful")
    net = build_model(config, (1, 28, 28), 10)
    split = Split(dataset.test.images[:64], dataset.test.labels[:64])
    first, second = evaluate(net, split, config, batch_size=32), evaluate(net, split, config, batch_size=32)
    assert first["activity"]["spikes_per_image"] > 0
    assert first["activity"] == second["activity"] and first["loss"] == second["loss"]
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    with torch.no_grad():  # the same network without a reset in between fires more the second time
        once = net(split.float_images(slice(0, 32))).sum()
        again = net(split.float_images(slice(0, 32))).sum()
    assert again > once
