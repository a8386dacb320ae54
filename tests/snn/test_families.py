"""The FC-SNN and CSNN families: the seed's networks are exact points of them, and their spikes, SynOps,
dense MACs and memory follow the shape (by hand on a two-hidden-layer FC-SNN and a three-block CSNN)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snn import RunConfig
from snn.data import Split
from snn.models import CSNN, FCSNN, csnn, fc_snn
from snn.networks import build_model, probe, resolve
from snn.spikes import record_activity, spiking_layers, synaptic_layers
from snn.training import evaluate
from tuning.search.space import load_space, shipped_spaces

SEED_FIGURES = Path(__file__).with_name("data") / "seed_figures.json"


def pinned_images() -> tuple[torch.Tensor, torch.Tensor]:
    """96 MNIST-like uint8 images (most pixels blank) and labels, the same on every machine."""
    images = torch.rand(96, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    images = (images * 255).round().to(torch.uint8)
    images[images < 140] = 0
    return images, torch.arange(96) % 10


@pytest.mark.parametrize("model", ["fc", "csnn"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_the_seed_networks_spend_what_they_spent_before_the_families(model, backend):
    """seed_figures.json was written by the seed models as they were before the families and the general
    accounting (hand-declared wiring): the same weights (seed 0, scaled x3 to wake the deep layers), the same
    images, the same Poisson draws give the same accuracy, loss, spikes per layer, SynOps per layer and MACs.
    Counts are compared to 1e-4: another CPU may round a convolution differently and flip a spike."""
    expected = json.loads(SEED_FIGURES.read_text())[f"{model}/{backend}"]
    config = RunConfig(model=model, device="cpu", backend=backend)
    torch.manual_seed(0)
    net = build_model(config)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    torch.manual_seed(1)
    result = evaluate(net, Split(*pinned_images()), config, batch_size=32)
    found = {"acc": result["acc"], "loss": result["loss"], **result["activity"]}
    assert sorted(found) == sorted(expected)
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


@pytest.mark.parametrize("space_file", ["fc.yaml", "fc-cpu.yaml", "csnn.yaml", "csnn-cpu.yaml"])
def test_each_shipped_family_holds_the_seed_network_exactly(space_file):
    """Trial 0 of every shipped space builds the seed's network: the same layers, names and initial weights."""
    space = load_space(shipped_spaces()[space_file.removesuffix(".yaml")])
    point, outside = space.seed_point()
    assert outside == []
    torch.manual_seed(0)
    family = build_model(space.config_for(point)).state_dict()
    torch.manual_seed(0)
    seed = build_model(RunConfig(model=space.model)).state_dict()
    assert list(family) == list(seed)
    assert all(torch.equal(family[k], seed[k]) for k in seed)


def test_depth_zero_is_the_seed_fc_snn_and_its_names():
    net = fc_snn()
    assert isinstance(net, FCSNN) and net.T == 100 and net.hidden_layers == 0
    assert [n for n, _ in net.named_children()] == ["fc", "sn"]
    assert tuple(net.fc.weight.shape) == (10, 784)


def test_the_seed_csnn_is_two_blocks_of_the_family():
    net = csnn()
    assert isinstance(net, CSNN) and net.blocks == 2 and net.T == 4
    assert sorted(spiking_layers(net)) == ["sn1", "sn2", "sn3", "sn4"]
    assert sorted(synaptic_layers(net)) == ["conv2", "encoder", "fc1", "fc2"]
    assert tuple(net.fc1.weight.shape) == (1024, 64 * 7 * 7) and not hasattr(net, "drop1")


def fire_always(linear: nn.Linear, targets: list[int], sources: list[int], weight: float) -> None:
    """Zero the layer, then give each target neuron ``weight`` from each source."""
    with torch.no_grad():
        linear.weight.zero_()
        for t in targets:
            linear.weight[t, sources] = weight


@pytest.mark.parametrize("encoding", ["direct", "poisson"])
def test_a_two_hidden_layer_fc_snn_spends_its_hand_count(encoding):
    """784-5-4-10 IF network, T 3, images with 6 lit pixels. fc1 drives hidden neurons 0 and 1 from pixel 0
    (current 1 = the threshold: they fire at every step), fc2 drives neuron 2 of layer 2 from both (0.5 + 0.5),
    fc drives class 3 from it. By hand, per image:
    spikes: sn1 2T, sn2 T, sn (output) T; SynOps: fc2 2T x 4, fc T x 10, and for Poisson input (white pixels:
    they spike at every step) fc1 6T x 5; direct input (grey pixels, 0.5) is analog: fc1 costs 784 x 5 MACs,
    once; dense MACs: T x (784 x 5 + 5 x 4 + 4 x 10)."""
    T = 3
    net = fc_snn(T=T, neuron="if", encoding=encoding, hidden_layers=2, width_1=5, width_2=4)
    poisson = encoding == "poisson"
    intensity = 1.0 if poisson else 0.5
    fire_always(net.fc1, [0, 1], [0], 1.0 / intensity)
    fire_always(net.fc2, [2], [0, 1], 0.5)
    fire_always(net.fc, [3], [2], 1.0)
    images = torch.zeros(4, 1, 28, 28)
    images[:, 0, 0, :6] = intensity  # pixel 0 and five more: 6 lit pixels per image
    with torch.no_grad(), record_activity(net) as activity:
        rates = net(images)
    assert torch.equal(rates, F.one_hot(torch.full((4,), 3), 10).float())
    assert activity.spikes == {"sn1": 2 * T, "sn2": T, "sn": T}
    assert activity.synops == {**({"fc1": 6 * T * 5} if poisson else {}), "fc2": 2 * T * 4, "fc": T * 10}
    assert activity.input_spikes == (6 * T if poisson else 0)
    assert activity.encoder_macs == (0 if poisson else 784 * 5)
    assert activity.dense_macs == T * (784 * 5 + 5 * 4 + 4 * 10)
    assert activity.steps == T


def test_a_three_block_csnn_spends_what_its_layers_receive():
    """Blocks 28 -> 14 -> 7 -> 3 (floor pooling), kernel 5. SynOps of each synaptic layer equal an independent
    count of the spikes it receives (their convolution with an all-ones kernel; for a Linear, spikes x outputs)
    on the torch reference path; dense MACs are the hand formula T x sum of each layer's MACs per sample."""
    T, (c1, c2, c3), fc_width = 2, (3, 4, 5), 16
    torch.manual_seed(0)
    net = csnn(T=T, blocks=3, channels_1=c1, channels_2=c2, channels_3=c3, kernel_size=5, fc_width=fc_width)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.mul_(4.0)  # wake the deep layers
    net.eval()
    received: dict[str, torch.Tensor] = {}
    for name, layer in synaptic_layers(net).items():
        layer.register_forward_pre_hook(lambda _m, inputs, name=name: received.__setitem__(name, inputs[0].clone()))
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), record_activity(net) as activity:
        net(images)
    layers = synaptic_layers(net)
    assert sorted(activity.synops) == ["conv2", "conv3", "fc1", "fc2"]
    for name, spikes in received.items():
        if name == "encoder":
            continue
        layer = layers[name]
        if isinstance(layer, nn.Conv2d):
            count = (
                F.conv2d(
                    spikes.flatten(0, 1) if spikes.dim() == 5 else spikes,
                    torch.ones_like(layer.weight),
                    padding=layer.padding,
                )
                .sum()
                .item()
            )
        else:
            count = spikes.sum().item() * layer.out_features
        assert count > 0, f"{name} receives no spike: the test would prove nothing"
        assert activity.synops[name] * 3 == pytest.approx(count, rel=1e-9), name
    assert activity.encoder_macs == 28 * 28 * c1 * 1 * 25
    per_sample = 28 * 28 * c1 * 25 + 14 * 14 * c2 * c1 * 25 + 7 * 7 * c3 * c2 * 25 + c3 * 9 * fc_width + fc_width * 10
    assert activity.dense_macs == T * per_sample
    assert sorted(activity.spikes) == ["sn1", "sn2", "sn3", "sn4", "sn5"]


def test_the_memory_check_follows_the_shape():
    """What a training batch keeps grows with the widths and the blocks; the probe measures it."""
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    fc = resolve("fc")

    def kept(model: str, **net) -> float:
        return probe(RunConfig(model=model, net=net), images, 10).bytes_per_image

    narrow = kept("fc", hidden_layers=1, width_1=64, T=8, encoding="direct")
    wide = kept("fc", hidden_layers=1, width_1=512, T=8, encoding="direct")
    deeper = kept("fc", hidden_layers=2, width_1=512, width_2=512, T=8, encoding="direct")
    assert narrow < wide < deeper
    # at least each hidden neuron's charge and spike per step (4 bytes each) are kept for the backward pass
    assert wide - narrow >= 8 * 8 * (512 - 64)
    assert deeper - wide >= 8 * 8 * 512
    one, three = kept("csnn", blocks=1, channels=8, T=2), kept("csnn", blocks=3, channels=8, T=2)
    assert three > one
    assert fc.check({"hidden_layers": 2}) is None


def test_the_cost_estimate_times_the_families_network(dataset):
    """The estimate trains a few batches of the network trial 0 runs: a wider network costs more per batch."""
    from tuning.search.cost import _epoch_seconds

    small = RunConfig(model="fc", net={"T": 4, "encoding": "direct"}, limit_train=2000, device="cpu")
    big = small.with_net(hidden_layers=2, width_1=1024, width_2=1024, T=16)
    assert _epoch_seconds(big, dataset, 1) > _epoch_seconds(small, dataset, 1)


@pytest.mark.parametrize(
    "name, net, words",
    [
        ("fc", {}, "784-10, LIF tau 2, T 100, poisson input"),
        (
            "fc",
            {"hidden_layers": 2, "width_1": 800, "width_2": 400, "encoding": "direct", "T": 8},
            "784-800-400-10, LIF tau 2, T 8, direct input",
        ),
        ("csnn", {}, "3x3 conv 64-64, FC 1024-10, IF, T 4"),
        (
            "csnn",
            {"blocks": 3, "channels_3": 128, "kernel_size": 5, "dropout": 0.2, "neuron": "lif", "tau": 3.0},
            "5x5 conv 64-64-128, FC 2048-10, LIF tau 3, T 4, dropout 0.2",
        ),
    ],
)
def test_a_network_is_described_by_its_shape(name, net, words):
    assert resolve(name).describe(net) == words


def test_the_families_build_for_colour_images_and_other_class_counts():
    """Image shape and classes come from the data: CIFAR-10's 3x32x32 and 10 classes, or 5 classes."""
    images = torch.rand(2, 3, 32, 32)
    for net in (
        fc_snn((3, 32, 32), 5, T=2, hidden_layers=1, width_1=8),
        csnn((3, 32, 32), 5, T=2, channels=4),
        csnn((3, 32, 32), 5, T=2, channels=4, blocks=3, kernel_size=5),
    ):
        assert net(images).shape == (2, 5)
    assert csnn((3, 32, 32), 10, channels=4).fc1.in_features == 4 * 8 * 8
    assert math.prod((3, 32, 32)) == fc_snn((3, 32, 32), 10).fc.in_features
