"""Spikes and SynOps of networks nobody declared anything for, held against spikingjelly's own counter.

spikingjelly 2.0's ``SynOpCounter`` counts, through torch's dispatch, every matrix product and convolution
whose input is binary. snn-tune's ``record_activity`` counts from module hooks; on every layer that receives
0/1 spikes the two must agree exactly. A layer fed the sum of two spike trains (a SEW block's output) gets
whole counts 0..2, which spikingjelly does not count as spikes: there an independent count (the input
convolved with an all-ones kernel) is the reference.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter
from torch import nn

from examples.deep_fc.net import build as deep_fc
from examples.sew_resnet.net import build as sew_resnet
from snn import RunConfig
from snn.networks import build_model
from snn.spikes import holds_spikes, record_activity, synaptic_layers


def spikingjelly_synops(model: nn.Module, images: torch.Tensor) -> dict[str, int]:
    """spikingjelly's SynOps per synaptic layer (our names) over one forward of ``images``."""
    counter = SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([counter]):
        model(images)
    counts = counter.get_counts()
    prefix = type(model).__name__
    return {name: sum(counts.get(f"{prefix}.{name}", {}).values()) for name in synaptic_layers(model)}


def our_counts(model: nn.Module, images: torch.Tensor):
    with torch.no_grad(), record_activity(model) as activity:
        model(images)
    return activity


def inputs_of(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each synaptic layer received in one forward."""
    seen, handles = {}, []
    for name, layer in synaptic_layers(model).items():
        handles.append(layer.register_forward_pre_hook(lambda _m, x, name=name: seen.__setitem__(name, x[0].clone())))
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return seen


def woken(model: nn.Module, factor: float = 3.0) -> nn.Module:
    """The model with its weights scaled up, so its deeper layers fire at initialisation, in eval mode."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(factor)
    return model.eval()


def grey_images(n: int = 3, shape=(1, 28, 28), seed: int = 0) -> torch.Tensor:
    images = torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(images > 0.6, images, torch.zeros(()))  # mostly blank, grey levels: an analog input


def assert_agrees_with_spikingjelly(model: nn.Module, images: torch.Tensor, integer_fed: tuple[str, ...] = ()):
    theirs = spikingjelly_synops(model, images)
    activity = our_counts(model, images)
    received = inputs_of(model, images)
    n = len(images)
    checked = 0
    for name, x in received.items():
        if not holds_spikes(x):
            assert name not in activity.synops and theirs[name] == 0, f"{name} is fed analog values: no SynOps"
            continue
        ours = activity.synops[name] * n
        if name in integer_fed:
            assert x.max() > 1, f"{name} was meant to receive summed spike trains"
        if x.max() > 1:  # spike counts above 1: spikingjelly counts none of them, an all-ones conv does
            layer = synaptic_layers(model)[name]
            if isinstance(layer, nn.Linear):
                expected = x.sum() * layer.out_features
            else:
                flat = x.flatten(0, 1) if x.dim() == 5 else x
                expected = F.conv2d(
                    flat, torch.ones_like(layer.weight), stride=layer.stride, padding=layer.padding
                ).sum()
            assert ours == pytest.approx(expected.item(), rel=1e-12), name
        else:
            assert ours == theirs[name], name
        assert ours > 0, f"{name} receives no spike: the comparison proves nothing"
        checked += 1
    assert checked >= 2
    return activity


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_the_seed_csnn(backend):
    torch.manual_seed(0)
    net = woken(build_model(RunConfig(model="csnn", backend=backend, net={"channels": 4, "T": 2})))
    activity = assert_agrees_with_spikingjelly(net, grey_images())
    assert sorted(activity.synops) == ["conv2", "fc1", "fc2"] and activity.encoder_macs == 28 * 28 * 4 * 9


def test_a_three_block_csnn_with_dropout_in_eval():
    torch.manual_seed(0)
    net = woken(
        build_model(
            RunConfig(
                model="csnn", net={"channels": 4, "T": 2, "blocks": 3, "kernel_size": 5, "dropout": 0.3, "fc_width": 32}
            )
        ),
        4.0,
    )
    activity = assert_agrees_with_spikingjelly(net, grey_images())
    assert sorted(activity.synops) == ["conv2", "conv3", "fc1", "fc2"]


def test_a_two_hidden_layer_fc_snn_with_direct_input():
    torch.manual_seed(0)
    net = woken(
        build_model(
            RunConfig(model="fc", net={"encoding": "direct", "T": 4, "hidden_layers": 2, "width_1": 32, "width_2": 16})
        ),
        6.0,
    )
    activity = assert_agrees_with_spikingjelly(net, grey_images())
    assert activity.encoder_macs == 784 * 32  # the analog image, once per image


def test_the_example_deep_fc_snn():
    """Plain spikingjelly LIF neurons, the image repeated at every step: the first layer is analog T times."""
    torch.manual_seed(0)
    net = woken(deep_fc(T=3, hidden=24), 6.0)
    activity = assert_agrees_with_spikingjelly(net, grey_images())
    assert activity.encoder_macs == 3 * 784 * 24
    assert activity.dense_macs == 3 * (784 * 24 + 24 * 24 + 24 * 10)


def test_the_example_sew_resnet_counts_summed_spike_trains():
    """Its blocks add their input spikes to their output spikes; the layer after them sees counts up to 3."""
    torch.manual_seed(0)
    net = woken(sew_resnet(T=2, channels=4, blocks=2), 3.0)
    activity = assert_agrees_with_spikingjelly(net, grey_images(), integer_fed=("blocks.1.conv1", "fc"))
    assert set(activity.synops) == {"blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "fc"}


def test_poisson_input_is_counted_at_its_expectation_spikingjelly_counts_the_draw():
    """The dense encoder (backend torch) draws the spikes spikingjelly counts; snn-tune counts T x intensity.
    Over 12 images of ~380 lit pixels at T 50 the draw is within 5 standard deviations of the expectation."""
    torch.manual_seed(0)
    net = build_model(RunConfig(model="fc", backend="torch", net={"T": 50})).eval()
    images = grey_images(12)
    theirs = spikingjelly_synops(net, images)["fc"]
    ours = our_counts(net, images).synops["fc"] * len(images)
    p = images.flatten()
    sigma = math.sqrt(float((p * (1 - p)).sum()) * 50) * 10
    assert abs(theirs - ours) < 5 * sigma
    assert ours == pytest.approx(float(images.double().sum()) * 50 * 10, rel=1e-12)
