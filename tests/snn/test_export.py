"""The tuned network out of the tool: loaded in one call, written as NIR, read back with the same spikes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from examples.deep_fc.net import build as deep_fc
from examples.sew_resnet.net import build as sew_resnet
from snn.export import NotExpressible, load_run, read_nir, run_folder_of, to_nir, write_nir
from snn.models import csnn, fc_snn
from snn.run_folder import RunFolder
from snn.spikes import output_layer_name, spiking_layers

ROOT = Path(__file__).resolve().parents[2]
warnings.filterwarnings("ignore", message=".*", module="nirtorch.*")


def woken(net, factor=4.0):
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.mul_(factor)
    return net.eval()


def output_spikes(net, images) -> torch.Tensor:
    """The output layer's spikes [T, N, classes] in one forward of the model."""
    seen = {}
    layer = spiking_layers(net)[output_layer_name(net)]
    handle = layer.register_forward_hook(lambda _m, _i, spikes: seen.__setitem__("spikes", spikes.detach().clone()))
    with torch.no_grad():
        net(images)
    handle.remove()
    return seen["spikes"]


def round_trip(net, input_shape, path, module=None):
    write_nir(net, input_shape, path, module)
    return read_nir(path)


@pytest.mark.parametrize(
    "name, make",
    [
        ("seed fc, binary images (certain Poisson spikes)", lambda: fc_snn(T=6)),
        (
            "two hidden LIF layers, direct input",
            lambda: fc_snn(T=4, hidden_layers=2, width_1=32, width_2=16, encoding="direct"),
        ),
        ("PLIF", lambda: fc_snn(T=4, hidden_layers=1, width_1=24, neuron="plif", tau=3.0, encoding="direct")),
    ],
)
def test_an_fc_snn_read_back_from_nir_gives_the_same_spikes(tmp_path, name, make):
    torch.manual_seed(0)
    net = woken(make(), 6.0)
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    if net.encoding == "poisson":
        images = (images > 0.7).float()  # 0/1 pixels: their Poisson spikes are the image at every step
    expected = output_spikes(net, images)
    back = round_trip(net, (1, 28, 28), tmp_path / "fc.nir")
    got = back(images.flatten(1).unsqueeze(0).repeat(net.T, 1, 1))
    assert expected.sum() > 0, "the output never fires: the comparison proves nothing"
    assert torch.equal(got, expected)


@pytest.mark.parametrize("blocks, neuron_kind", [(2, "lif"), (3, "if")])
def test_a_csnn_read_back_from_nir_gives_the_same_spikes(tmp_path, dataset, blocks, neuron_kind):
    """Its batch norms hold statistics, affine weights of their own, which the export folds into the convolutions."""
    torch.manual_seed(0)
    net = csnn(T=3, channels=8, blocks=blocks, neuron=neuron_kind, tau=1.5)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            for tensor, low, span in (
                (bn.running_mean, -0.2, 0.4),
                (bn.running_var, 0.5, 1.0),
                (bn.weight, 1.0, 0.5),
                (bn.bias, 0.0, 0.3),
            ):
                tensor.copy_(low + span * torch.rand(tensor.shape, generator=generator))
    net = woken(net, 6.0)
    images = dataset.test.float_images(slice(0, 16))
    expected = output_spikes(net, images)
    back = round_trip(net, (1, 28, 28), tmp_path / "csnn.nir")
    got = back(images.unsqueeze(0).repeat(3, 1, 1, 1, 1))
    assert expected.sum() > 0, "the output never fires: the comparison proves nothing"
    assert torch.equal(got, expected)


def test_the_nir_graph_names_the_layers_and_folds_batch_norm():
    graph = to_nir(csnn(T=2, channels=4), (1, 28, 28))
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    assert kinds == {
        "input": "Input",
        "encoder": "Conv2d",
        "sn1": "IF",
        "pool1": "SumPool2d",
        "pool1_any": "Threshold",
        "conv2": "Conv2d",
        "sn2": "IF",
        "pool2": "SumPool2d",
        "pool2_any": "Threshold",
        "flatten": "Flatten",
        "fc1": "Linear",
        "sn3": "IF",
        "fc2": "Linear",
        "sn4": "IF",
        "output": "Output",
    }
    assert graph.nodes["encoder"].bias.shape == (4,)
    for name in ("encoder", "conv2", "fc1", "fc2"):  # plain C-order arrays, whatever the model's memory layout
        assert graph.nodes[name].weight.flags["C_CONTIGUOUS"], name


def test_a_network_of_yours_exports_through_spikingjelly_or_is_refused_naming_the_layer(tmp_path):
    torch.manual_seed(0)
    net = woken(deep_fc(T=3, hidden=16), 5.0)
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    expected = output_spikes(net, images)
    back = round_trip(net, (1, 28, 28), tmp_path / "deep.nir", module="layers")  # its forward repeats the image
    assert expected.sum() > 0 and torch.equal(back(images.unsqueeze(0).repeat(3, 1, 1, 1, 1)), expected)
    with pytest.raises(NotExpressible, match=r"^layer stem\.1 \(BatchNorm2d\): NIR cannot express it"):
        to_nir(sew_resnet(), (1, 28, 28))
    with pytest.raises(NotExpressible, match="DeepFC: spikingjelly's NIR export failed"):
        to_nir(net, (1, 28, 28))


def test_a_run_loads_in_one_call_and_exports_from_the_command_line(tmp_path, data_root):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    trained = subprocess.run(
        [
            sys.executable,
            "-m",
            "snn.train",
            "fc",
            "--hidden-layers",
            "1",
            "--width-1",
            "16",
            "--T",
            "4",
            "--encoding",
            "direct",
            "--epochs",
            "1",
            "--limit-train",
            "500",
            "--limit-test",
            "100",
            "--device",
            "cpu",
            "--quiet",
            "--data-dir",
            str(data_root),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    model, config = load_run(out)
    assert config.net == {"hidden_layers": 1, "width_1": 16, "T": 4, "encoding": "direct"}
    assert not model.training and model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    saved = torch.load(RunFolder(out).checkpoint, weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    exported = subprocess.run(
        [sys.executable, "-m", "snn.export", str(out), "--out", str(tmp_path / "m.nir")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "m.nir").stat().st_size > 0 and list(read_nir(tmp_path / "m.nir").parameters())
    refused = subprocess.run(
        [sys.executable, "-m", "snn.export", str(tmp_path), "--out", str(tmp_path / "x.nir")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "neither a run folder (no checkpoint.pt) nor an experiment with a retrained network" in refused.stderr
    assert not (tmp_path / "x.nir").exists()


def test_an_experiment_folder_gives_its_retrained_seed(tmp_path):
    for seed in (3, 4):
        folder = RunFolder(tmp_path / "retrain" / f"seed-{seed}")
        folder.path.mkdir(parents=True)
        folder.checkpoint.write_bytes(b"x")
    assert run_folder_of(tmp_path) == tmp_path / "retrain" / "seed-3"
    assert run_folder_of(tmp_path, 4) == tmp_path / "retrain" / "seed-4"
    assert json.dumps(str(run_folder_of(tmp_path / "retrain" / "seed-4")))
