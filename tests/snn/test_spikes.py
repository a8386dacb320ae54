"""Spike counts, SynOps, dense MACs and the energy estimate: by hand on known spikes, and on the real models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snn.config import RunConfig
from snn.models import CSNN, FCSNN, build_model, record_firing_rates
from snn.spikes import (PJ_PER_MAC, PJ_PER_SYNOP, QuietOutputCounter, conv_coverage, macs_per_forward,
                        record_activity, spiking_layers, synops, weight_layer)


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


@pytest.mark.parametrize("conv", [nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 2, 5, stride=2, padding=1),
                                  nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2)])
def test_conv_synops_equal_a_convolution_of_the_spikes_with_ones(conv):
    """An independent count: convolving the spikes with an all-ones kernel sums, over every
    output, the spikes its window reaches, which is every spike times the synapses it drives."""
    spikes = (torch.rand(2, 3, conv.in_channels, 9, 11, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    ones = torch.ones_like(conv.weight)
    expected = F.conv2d(spikes.flatten(0, 1), ones, stride=conv.stride, padding=conv.padding,
                        dilation=conv.dilation, groups=conv.groups).sum()
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
    model = FCSNN(T=T)
    model.sparse_input = sparse_input
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
    model = FCSNN(T=10)
    images = torch.full((4, 1, 28, 28), 0.25)
    with torch.no_grad(), record_activity(model) as activity:
        model(images)
    assert activity.input_spikes == pytest.approx(10 * 784 * 0.25, rel=1e-12)
    assert activity.synops["fc"] == pytest.approx(activity.input_spikes * 10, rel=1e-12)


def csnn_that_fires(T: int = 3, channels: int = 4) -> CSNN:
    """A small CSNN whose every layer fires on random images (BN statistics of the batch, scaled weights)."""
    torch.manual_seed(0)
    model = build_model(RunConfig(model="csnn", T=T, channels=channels, device="cpu"))
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
    taps = {"sn1": model.sn1, "sn2": model.sn2, "sn3": model.sn3, "sn4": model.sn4, "pool1": model.pool1,
            "pool2": model.pool2}
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach()))
               for name, m in taps.items()]
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


@pytest.mark.parametrize("model", ["fc", "csnn"])
def test_every_weight_layer_is_declared_and_the_output_layer_drives_nothing(model):
    net = build_model(RunConfig(model=model, T=2, channels=4, device="cpu"))
    declared = {s.layer for s in net.synapses}
    weights = {name for name, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert {name for name in weights if not any(name == d or name.startswith(f"{d}.") for d in declared)} == set()
    assert all(weight_layer(dict(net.named_modules())[d]) is not None for d in declared)
    assert net.output_layer in spiking_layers(net)
    assert net.output_layer not in {s.source for s in net.synapses}
    assert list(spiking_layers(net))[-1] == net.output_layer


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
    model = FCSNN(T=4)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight[:3] = 1.0
    images = torch.cat([binary_images(3), torch.zeros(2, 1, 28, 28)])  # 12 output spikes, 12, 12, 0, 0
    counter = QuietOutputCounter(model, min_spikes=12)
    with torch.no_grad():
        model(images)
    assert counter.close() == (2, 5)
    counter = QuietOutputCounter(model, min_spikes=12.5)
    with torch.no_grad():
        model(images)
    assert counter.close() == (5, 5)
    assert not model.sn._forward_hooks
