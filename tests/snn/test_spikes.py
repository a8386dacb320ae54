"""Spike counts, SynOps, dense MACs and the energy estimate: by hand on known spikes, and on the real models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron
from torch import nn

from snn.config import RunConfig
from snn.models import CSNN, fc_snn
from snn.networks import build_model
from snn.spikes import (
    PJ_PER_MAC,
    PJ_PER_SYNOP,
    NoSpikingLayer,
    QuietOutputCounter,
    conv_coverage,
    holds_spikes,
    macs_per_forward,
    output_layer_name,
    record_activity,
    record_firing_rates,
    spiking_layers,
    synaptic_layers,
    synops,
)


def test_a_linear_spike_drives_one_synapse_per_output():
    layer = nn.Linear(6, 4)
    spikes = torch.zeros(3, 2, 6)  # [T, N, in]
    spikes[0, 0, 1] = spikes[0, 1, 5] = spikes[1, 0, 0] = spikes[2, 0, 1] = spikes[2, 1, 3] = 1
    assert synops(layer, spikes).item() == 5 * 4


def test_a_conv_spike_drives_one_synapse_per_output_position_its_window_reaches():
    """3x3, padding 1, 3 output channels on a 4x4 map: a corner spike reaches 4 output positions,
    an edge spike 6, an inner one 9, each in the 3 output channels."""
    conv = nn.Conv2d(1, 3, 3, padding=1)
    spikes = torch.zeros(2, 1, 1, 4, 4)  # [T, N, C, H, W]
    spikes[0, 0, 0, 0, 0] = 1  # corner
    spikes[0, 0, 0, 0, 2] = 1  # edge
    spikes[1, 0, 0, 1, 1] = 1  # inside
    assert synops(conv, spikes).item() == (4 + 6 + 9) * 3
    assert conv_coverage(conv, 4, 4).tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]


def test_a_strided_conv_reaches_nothing_past_its_last_window():
    """2x2, stride 2, no padding on 5x5: every input of the first 4 rows and columns reaches one
    output position; the 5th row and column reach none."""
    conv = nn.Conv2d(2, 5, 2, stride=2)
    assert conv_coverage(conv, 5, 5).tolist() == [[1, 1, 1, 1, 0]] * 4 + [[0] * 5]
    spikes = torch.zeros(1, 1, 2, 5, 5)
    spikes[0, 0, 0, 0, 0] = spikes[0, 0, 1, 3, 3] = spikes[0, 0, 1, 4, 2] = 1
    assert synops(conv, spikes).item() == 2 * 5


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Conv2d(3, 2, 5, stride=2, padding=1),
        nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2),
    ],
)
def test_conv_synops_equal_a_convolution_of_the_spikes_with_ones(conv):
    """An independent count: convolving the spikes with an all-ones kernel sums, over every
    output, the spikes its window reaches, which is every spike times the synapses it drives."""
    spikes = (torch.rand(2, 3, conv.in_channels, 9, 11, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    ones = torch.ones_like(conv.weight)
    expected = F.conv2d(
        spikes.flatten(0, 1), ones, stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups
    ).sum()
    assert synops(conv, spikes).item() == expected.item()


def test_dense_macs_of_one_forward_by_hand():
    assert macs_per_forward(nn.Linear(784, 10)) == 7840
    assert macs_per_forward(nn.Conv2d(1, 8, 3, padding=1), (28, 28)) == 28 * 28 * 8 * 1 * 9
    assert macs_per_forward(nn.Conv2d(4, 6, 3, stride=2, groups=2), (9, 9)) == 4 * 4 * 6 * 2 * 9


def binary_images(n: int = 3) -> torch.Tensor:
    """Images of 0 and 1 intensities: their Poisson spikes are certain (1 at every step, 0 never)."""
    images = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        images[i, 0, 10 + i, 5:20] = 1.0  # 15 white pixels per image
    return images


@pytest.mark.parametrize("sparse_input", [True, False])
def test_fc_snn_counts_agree_with_the_hand_count(sparse_input):
    """T = 7, 15 always-spiking pixels per image, and weights that make output neurons 0-2 fire at
    every step and the other 7 never: 21 output spikes, 105 input spikes and 1050 SynOps per image."""
    T = 7
    model = fc_snn(T=T)
    model.fc.sparse = sparse_input
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight[:3] = 1.0
    with torch.no_grad(), record_activity(model) as activity:
        model(binary_images(3))
        model(binary_images(2))
    assert activity.images == 5
    assert activity.spikes == {"sn": 3 * T}
    assert activity.rates == {"sn": 3 / 10}
    assert activity.input_spikes == 15 * T
    assert activity.synops == {"fc": 15 * T * 10}
    assert activity.encoder_macs == 0
    assert activity.dense_macs == 784 * 10 * T
    metrics = activity.metrics()
    assert metrics["spikes_per_image"] == metrics["spikes_sn"] == 21
    assert metrics["synops_per_image"] == metrics["synops_fc"] == 1050
    assert metrics["energy_estimate_uj"] == pytest.approx(1050 * 0.9e-6, rel=1e-12)


def test_poisson_input_spikes_are_counted_at_their_expectation():
    model = fc_snn(T=10)
    images = torch.full((4, 1, 28, 28), 0.25)
    with torch.no_grad(), record_activity(model) as activity:
        model(images)
    assert activity.input_spikes == pytest.approx(10 * 784 * 0.25, rel=1e-12)
    assert activity.synops["fc"] == pytest.approx(activity.input_spikes * 10, rel=1e-12)


def csnn_that_fires(T: int = 3, channels: int = 4) -> CSNN:
    """A small CSNN whose every layer fires on random images (BN statistics of the batch, scaled weights)."""
    torch.manual_seed(0)
    model = build_model(RunConfig(model="csnn", net={"T": T, "channels": channels}, device="cpu"))
    with torch.no_grad():
        model.fc1.weight.mul_(4)
        model.fc2.weight.mul_(6)
    return model.train()  # BN normalises with the batch's statistics, so the convolutions fire


def random_images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_csnn_synops_are_the_spikes_that_reach_each_layer_times_its_synapses():
    """Independent of snn.spikes: capture what each layer receives, count SynOps by convolving with ones
    (conv2) or multiplying by out_features (fc1, fc2), and compare exactly."""
    model, images = csnn_that_fires(), random_images()
    seen: dict[str, torch.Tensor] = {}
    taps = {
        "sn1": model.sn1,
        "sn2": model.sn2,
        "sn3": model.sn3,
        "sn4": model.sn4,
        "pool1": model.pool1,
        "pool2": model.pool2,
    }
    handles = [
        m.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach()))
        for name, m in taps.items()
    ]
    with torch.no_grad(), record_activity(model) as activity:
        model(images)
    for h in handles:
        h.remove()
    n, C = len(images), 4
    assert all(seen[f"sn{i}"].sum() > 0 for i in (1, 2, 3, 4)), "every layer fires"
    assert activity.spikes == {f"sn{i}": seen[f"sn{i}"].sum().item() / n for i in (1, 2, 3, 4)}
    conv2_in = seen["pool1"].flatten(0, 1)  # [T*N, C, 14, 14]: sn1's spikes after the max-pool
    expected = {
        "conv2": F.conv2d(conv2_in, torch.ones(C, C, 3, 3), padding=1).sum().item() / n,
        "fc1": seen["pool2"].sum().item() * C * 16 / n,
        "fc2": seen["sn3"].sum().item() * 10 / n,
    }
    assert activity.synops == expected
    metrics = activity.metrics()
    assert metrics["synops_per_image"] == sum(expected.values())
    # without pooling, a spike drives the next layer's fan-out exactly: sn3 -> fc2 (10 synapses)
    assert metrics["synops_fc2"] == metrics["spikes_sn3"] * 10
    # through a max-pool, at most the spikes of the layer before, each at most C * 3 * 3 synapses
    assert metrics["synops_conv2"] <= metrics["spikes_sn1"] * C * 9
    assert metrics["synops_fc1"] <= metrics["spikes_sn2"] * C * 16


def test_csnn_macs_by_hand():
    """C = 4, T = 3: the encoder conv once per image, the dense equivalent every layer at every step."""
    model, T, C = csnn_that_fires(T=3, channels=4), 3, 4
    with torch.no_grad(), record_activity(model) as activity:
        model(random_images(2))
    encoder = 28 * 28 * C * 1 * 9
    per_step = encoder + 14 * 14 * C * C * 9 + (C * 7 * 7) * (C * 16) + (C * 16) * 10
    assert activity.encoder_macs == encoder
    assert activity.dense_macs == T * per_step
    assert activity.input_spikes == 0
    expected_uj = (PJ_PER_SYNOP * sum(activity.synops.values()) + PJ_PER_MAC * encoder) * 1e-6
    assert activity.energy_estimate_uj == pytest.approx(expected_uj, rel=1e-12)


@pytest.mark.parametrize(
    ("model", "net", "weights", "analog"),
    [
        ("fc", {"T": 2}, ["fc"], []),
        ("fc", {"T": 2, "hidden_layers": 2, "width_1": 6, "width_2": 5}, ["fc1", "fc2", "fc"], []),
        ("fc", {"T": 2, "encoding": "direct"}, ["fc"], ["fc"]),
        ("csnn", {"T": 2, "channels": 4}, ["encoder", "conv2", "fc1", "fc2"], ["encoder"]),
        (
            "csnn",
            {"T": 2, "channels": 4, "blocks": 3, "dropout": 0.2},
            ["encoder", "conv2", "conv3", "fc1", "fc2"],
            ["encoder"],
        ),
    ],
)
def test_every_weight_layer_is_found_and_counted_and_the_output_layer_runs_last(model, net, weights, analog):
    """Nothing is declared: every Linear and Conv is found (named by the container that holds it alone)
    and counted, as SynOps when spikes reach it, as encoder MACs when the analog image does."""
    network = build_model(RunConfig(model=model, net=net, device="cpu")).eval()
    found = synaptic_layers(network)
    assert list(found) == weights
    every_weight = [m for m in network.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert sorted(map(id, found.values())) == sorted(map(id, every_weight)), "each weight layer once"
    images = random_images(3)
    with torch.no_grad(), record_activity(network) as activity:
        network(images)
    assert list(activity.synops) == [w for w in weights if w not in analog]
    assert activity.encoder_macs == sum(macs_per_forward(found[w], (28, 28)) for w in analog)
    sizes = {"encoder": (28, 28), "conv2": (14, 14), "conv3": (7, 7)}
    assert activity.dense_macs == 2 * sum(macs_per_forward(found[w], sizes.get(w)) for w in weights)
    output = output_layer_name(network)
    assert output == list(spiking_layers(network))[-1] == activity.order[-1]
    assert activity.order == list(spiking_layers(network)), "the spiking layers run in the order they are defined"
    assert activity.steps == 2


def test_a_named_output_layer_must_be_a_spiking_layer():
    network = fc_snn(T=2, hidden_layers=1, width_1=4)
    assert output_layer_name(network) == "sn"
    assert output_layer_name(network, "sn1") == "sn1"
    with pytest.raises(
        KeyError,
        match=r"output_layer 'fc' is not a spiking layer of the network; its spiking "
        r"layers: sn1, sn",
    ):
        output_layer_name(network, "fc")


def test_record_firing_rates_agrees_with_the_activity():
    model, images = csnn_that_fires(), random_images()
    torch.manual_seed(3)
    with torch.no_grad(), record_firing_rates(model) as rates:
        model(images)
    torch.manual_seed(3)
    with torch.no_grad(), record_activity(model) as activity:
        model(images)
    assert rates == activity.rates
    assert rates["sn4"] == pytest.approx(activity.spikes["sn4"] / (3 * 10))  # spikes per image / (T * neurons)


def test_hooks_are_removed_when_the_block_ends():
    model = csnn_that_fires()
    with record_activity(model):
        pass
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_quiet_output_counter_counts_images_below_the_threshold():
    """Output neurons 0-2 fire at every step for images with white pixels; a blank image fires nothing."""
    model = fc_snn(T=4)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight[:3] = 1.0
    images = torch.cat([binary_images(3), torch.zeros(2, 1, 28, 28)])  # 12 output spikes, 12, 12, 0, 0
    steps = []
    counter = QuietOutputCounter(model, lambda T: steps.append(T) or 12)
    with torch.no_grad():
        model(images)
    assert counter.close() == (2, 5)
    assert steps == [4], "the threshold is asked for the output layer's steps per forward"
    counter = QuietOutputCounter(model, lambda T: 12.5)
    with torch.no_grad():
        model(images)
    assert counter.close() == (5, 5)
    assert not model.sn._forward_hooks and not model._forward_hooks


class SummedTrains(nn.Module):
    """A network of one's own: the analog image drives fc1 once; sn1's spike train is added to itself (counts of
    0 or 2, as a SEW residual adds trains) before fc2; plain spikingjelly IF neurons, counted by hooks."""

    def __init__(self, T: int = 3):
        super().__init__()
        self.T = T
        self.fc1 = nn.Linear(4, 3, bias=False)
        self.sn1 = neuron.IFNode(step_mode="m")
        self.fc2 = nn.Linear(3, 2, bias=False)
        self.sn2 = neuron.IFNode(step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 4] -> [N, 2]
        functional.reset_net(self)
        spikes = self.sn1(self.fc1(x).unsqueeze(0).repeat(self.T, 1, 1))  # [T, N, 3]
        return self.sn2(self.fc2(spikes + spikes)).mean(0)


def test_a_network_of_ones_own_is_counted_from_what_reaches_each_weight():
    model = SummedTrains(T=3)
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)  # a current of 2: every sn1 neuron fires at every step
        model.fc2.weight.fill_(-1.0)  # sn2 never fires
    with torch.no_grad(), record_activity(model) as activity:
        model(torch.full((5, 4), 0.5))  # analog: not whole numbers
    assert list(synaptic_layers(model)) == ["fc1", "fc2"]
    assert activity.images == 5 and activity.steps == 3
    assert activity.spikes == {"sn1": 3 * 3, "sn2": 0}
    assert activity.rates == {"sn1": 1.0, "sn2": 0.0}
    assert activity.encoder_macs == 4 * 3, "the analog image drives fc1 once per image"
    assert activity.synops == {"fc2": 3 * 3 * 2 * 2}, "a count of 2 is two spikes, each driving 2 synapses"
    assert activity.dense_macs == 3 * (4 * 3 + 3 * 2)
    assert activity.input_spikes == 0
    assert activity.order == ["sn1", "sn2"]
    with torch.no_grad(), record_activity(model) as binary:
        model(torch.ones(5, 4))  # whole numbers: input spikes, 4 per image, each driving fc1's 3 synapses
    assert binary.encoder_macs == 0 and binary.synops == {"fc1": 4 * 3, "fc2": 3 * 3 * 2 * 2}


def test_spikes_are_whole_non_negative_numbers():
    assert holds_spikes(torch.tensor([0.0, 1.0, 1.0])) and holds_spikes(torch.tensor([0.0, 2.0, 3.0]))
    assert holds_spikes(torch.tensor([True, False])) and holds_spikes(torch.tensor([0, 4]))
    assert not holds_spikes(torch.tensor([0.0, 0.5])) and not holds_spikes(torch.tensor([-1.0, 1.0]))
    assert not holds_spikes(torch.tensor([0, -2]))


def test_a_network_without_a_spiking_layer_cannot_be_recorded():
    with pytest.raises(NoSpikingLayer, match=r"^Linear holds no spikingjelly neuron module"):
        with record_activity(nn.Linear(3, 2)):
            pass


def test_quiet_output_counter_judges_the_named_output_layer():
    """The hidden layer sn1 fires at every step (2 neurons x 4 steps = 8 spikes per image); the output layer sn never."""
    model = fc_snn(T=4, hidden_layers=1, width_1=2)
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)
        model.fc.weight.fill_(-1.0)
    images = binary_images(3)
    for layer, quiet in (("sn1", 0), ("sn", 3), (None, 3)):
        counter = QuietOutputCounter(model, lambda T: 8, output_layer=layer)
        with torch.no_grad():
            model(images)
        assert counter.close() == (quiet, 3), layer
