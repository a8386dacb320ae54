"""What a spiking network spends: spikes, synaptic operations (SynOps), dense MACs and an energy estimate.

``record_activity(model)`` counts, with forward hooks over every forward inside its block,
what the evaluator reports for a split. Each model declares its wiring (``synapses``: which
activity drives each Linear/Conv layer) and its ``output_layer``; the counts follow it.

Definitions, all per image (summed over the T time steps, averaged over the images):

* spikes of a spiking layer: its spikes, summed over its neurons. The total is over the
  spiking layers; the Poisson input is reported apart (``input_spikes_per_image``).
* SynOps of a synaptic layer: each spike that reaches it, counted once per synapse it
  drives. A Linear's spike drives ``out_features`` synapses; a Conv2d's drives
  ``out_channels / groups`` times the number of output positions whose kernel window covers
  it: k·k inside, fewer at the zero-padded border. The count is exact (spikes per input
  position times a coverage map), not the k·k·C_out upper bound. The spikes that reach a
  layer are those its input holds, after any max-pooling between it and the spiking layer
  that feeds it (a 2x2 max-pool passes at most one spike per window on).
* Poisson input (FC-SNN): a pixel of intensity p spikes at each step with probability p, so
  its spikes are counted at their expectation, T·p per pixel. The CPU path never builds the
  spike tensor (``snn.fastpath.poisson_input_current``); on 2,000 MNIST test images at
  T = 20, a drawn count (``poisson_encode``) was 0.005% above the expectation.
* analog input (the CSNN's first Conv-BN, the encoder): no spikes; its dense MACs,
  ``encoder_macs_per_image``, counted once per image, as the model computes it: the image is
  the same at every step, so its current is computed once and presented T times.
* dense MACs: what an ANN of the same layers computes per image over T steps, the
  multiply-accumulates of one forward of every Linear/Conv2d, times T.
* energy: ``PJ_PER_SYNOP`` per SynOp (an accumulate: a 32-bit float add) plus ``PJ_PER_MAC``
  per encoder MAC, in microjoules per image. An estimate from Horowitz's 45 nm figures,
  counting synaptic arithmetic only: no memory access, neuron update, pooling or BN (which
  folds into the convolution at inference).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from spikingjelly.activation_based.neuron.base_node import BaseNode
from torch import nn

# Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014: 45 nm CMOS
PJ_PER_SYNOP = 0.9  # pJ per 32-bit float add: a SynOp accumulates a weight into a membrane
PJ_PER_MAC = 4.6  # pJ per 32-bit float multiply (3.7 pJ) and add (0.9 pJ)

POISSON_INPUT = "poisson input"  # a synaptic layer driven by the Poisson code of the image
ANALOG_INPUT = "analog input"  # a synaptic layer driven by the image itself (dense MACs)


@dataclass(frozen=True)
class Synapses:
    """One synaptic layer of a model and what drives it.

    layer: attribute name of the module holding the nn.Linear or nn.Conv2d (it may wrap it
    with batch norm); source: the spiking layer whose spikes reach it (through pooling and
    flattening), or POISSON_INPUT, or ANALOG_INPUT.
    """

    layer: str
    source: str


def spiking_layers(model: nn.Module) -> dict[str, BaseNode]:
    """Every spiking neuron layer of a model, by its attribute name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BaseNode)}


def output_layer(model: nn.Module) -> BaseNode:
    """The spiking layer whose rate is the model's output: ``model.output_layer``, else the last one."""
    layers = spiking_layers(model)
    name = getattr(model, "output_layer", None) or list(layers)[-1]
    return layers[name]


def weight_layer(module: nn.Module) -> nn.Linear | nn.Conv2d:
    """The nn.Linear or nn.Conv2d a synaptic layer computes with (the first one it holds)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            return m
    raise TypeError(f"{type(module).__name__} holds no nn.Linear or nn.Conv2d")


def conv_coverage(conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """How many output positions each input position of a [height, width] map reaches: [height, width] int64.

    k·k inside; fewer at a zero-padded border (4 at a corner of a 3x3, padding-1 convolution).
    """
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise NotImplementedError(f"SynOps of a convolution with padding {conv.padding!r} / {conv.padding_mode}")
    axes = [_axis_coverage(n, k, s, p, d) for n, k, s, p, d in
            zip((height, width), conv.kernel_size, conv.stride, conv.padding, conv.dilation)]
    return torch.outer(axes[0], axes[1])


def _axis_coverage(n: int, k: int, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """Along one axis of length n: for each input index, the output indices whose window holds it."""
    outputs = (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    counts = [0] * n
    for o in range(outputs):
        for j in range(k):
            i = o * stride - padding + j * dilation
            if 0 <= i < n:
                counts[i] += 1
    return torch.tensor(counts, dtype=torch.int64)


def count_spikes(spikes: torch.Tensor) -> torch.Tensor:
    """The number of spikes in a 0/1 tensor, as an exact float64 scalar tensor.

    A float32 sum of 0/1 values is exact below 2^24 per partial sum, so each [t, n] slice of
    [T, N, ...] is summed in float32 (as fast as one sum; half-precision spikes are summed in
    float32 too) and the slices in float64.
    """
    if spikes.dim() < 3:
        return spikes.sum(dtype=torch.float64)
    return spikes.sum(dim=tuple(range(2, spikes.dim())), dtype=torch.float32).sum(dtype=torch.float64)


def synops(layer: nn.Linear | nn.Conv2d, spikes: torch.Tensor) -> torch.Tensor:
    """SynOps a 0/1 spike tensor drives into ``layer``, exactly, as a float64 scalar tensor.

    spikes: [..., in_features] for a Linear, [..., C_in, H, W] for a Conv2d; any leading dims
    (time, batch); each 1 is one spike.
    """
    if isinstance(layer, nn.Linear):
        return count_spikes(spikes) * layer.out_features
    height, width = spikes.shape[-2:]
    if spikes.numel() // (height * width) < 2**24:  # each position's float32 sum stays exact
        per_position = spikes.sum(dim=tuple(range(spikes.dim() - 2)), dtype=torch.float32).double()  # [H, W]
    else:
        per_position = spikes.sum(dim=-3, dtype=torch.float32).flatten(0, -3).sum(0, dtype=torch.float64)  # [H, W]
    coverage = conv_coverage(layer, height, width).to(per_position.device, torch.float64)
    return (per_position * coverage).sum() * (layer.out_channels // layer.groups)


def macs_per_forward(layer: nn.Linear | nn.Conv2d, input_size: tuple[int, int] | None = None) -> int:
    """Multiply-accumulates of one forward of ``layer`` on one image; a Conv2d needs its input's (H, W)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features * layer.out_features
    (h, w), (kh, kw) = input_size, layer.kernel_size
    out_h, out_w = (
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip((h, w), layer.kernel_size, layer.stride, layer.padding, layer.dilation))
    return layer.out_channels * out_h * out_w * (layer.in_channels // layer.groups) * kh * kw


@dataclass
class Activity:
    """What ``record_activity`` counted, per image; ``metrics()`` gives it as flat record entries."""

    images: int = 0
    rates: dict[str, float] = field(default_factory=dict)  # spikes per neuron per step, by spiking layer
    spikes: dict[str, float] = field(default_factory=dict)  # spikes per image, by spiking layer
    synops: dict[str, float] = field(default_factory=dict)  # SynOps per image, by synaptic layer
    input_spikes: float = 0.0  # expected Poisson input spikes per image (0 without a Poisson input)
    encoder_macs: float = 0.0  # MACs per image of the layers the analog image drives
    dense_macs: float = 0.0  # MACs per image of an ANN of the same layers over T steps

    @property
    def energy_estimate_uj(self) -> float:
        """Synaptic energy per image in µJ: PJ_PER_SYNOP per SynOp plus PJ_PER_MAC per encoder MAC."""
        return (PJ_PER_SYNOP * sum(self.synops.values()) + PJ_PER_MAC * self.encoder_macs) * 1e-6

    def metrics(self) -> dict[str, float]:
        """Flat record entries (the evaluator prefixes the split, e.g. ``test_``).

        spikes_per_image, spikes_<spiking layer>, input_spikes_per_image, synops_per_image,
        synops_<synaptic layer>, encoder_macs_per_image, dense_macs_per_image, energy_estimate_uj.
        """
        return {
            "spikes_per_image": sum(self.spikes.values()),
            **{f"spikes_{name}": n for name, n in self.spikes.items()},
            "input_spikes_per_image": self.input_spikes,
            "synops_per_image": sum(self.synops.values()),
            **{f"synops_{name}": n for name, n in self.synops.items()},
            "encoder_macs_per_image": self.encoder_macs,
            "dense_macs_per_image": self.dense_macs,
            "energy_estimate_uj": self.energy_estimate_uj,
        }


@contextlib.contextmanager
def record_activity(model: nn.Module) -> Iterator[Activity]:
    """Count spikes, SynOps and MACs over every forward of ``model`` inside the block.

    Yields an ``Activity`` that is filled in when the block ends. The hooks only add to
    tensors on the model's device (and to Python ints for shapes); the one host sync is at
    the end. A model without a ``synapses`` declaration gets its spikes and rates only.
    """
    T = getattr(model, "T", 1)
    layers = spiking_layers(model)
    declared: tuple[Synapses, ...] = tuple(getattr(model, "synapses", ()))
    modules = dict(model.named_modules())
    weights = {s.layer: weight_layer(modules[s.layer]) for s in declared}
    counts = _Counts(neuron_steps=dict.fromkeys(layers, 0))
    poisson = any(s.source == POISSON_INPUT for s in declared)

    def on_images(_module, inputs):
        counts.images += len(inputs[0])
        if poisson:
            counts.add("input", inputs[0].sum(dtype=torch.float64) * T)  # expected spikes: T·p per pixel

    def on_spikes(name: str):
        def counter(count: torch.Tensor, neuron_steps: int) -> None:
            counts.add(f"spikes/{name}", count)
            counts.neuron_steps[name] += neuron_steps
        return counter

    def watch(name: str, layer: BaseNode):
        """The fused neurons count their own spikes (also when fused with their pool); others by a hook."""
        counter = on_spikes(name)
        if hasattr(layer, "register_spike_counter"):
            return layer.register_spike_counter(counter)
        return layer.register_forward_hook(lambda _module, _inputs, spikes: counter(count_spikes(spikes),
                                                                                   spikes.numel()))

    def on_synapse_input(synapse: Synapses):
        layer = weights[synapse.layer]

        def hook(_module, inputs):
            x = inputs[0]
            if isinstance(layer, nn.Conv2d):
                counts.input_sizes[synapse.layer] = tuple(x.shape[-2:])
            if synapse.source == ANALOG_INPUT:
                samples = math.prod(x.shape[:-3] if isinstance(layer, nn.Conv2d) else x.shape[:-1])
                counts.encoder_macs += samples * macs_per_forward(layer, counts.input_sizes.get(synapse.layer))
            elif synapse.source != POISSON_INPUT:
                counts.add(f"synops/{synapse.layer}", synops(layer, x))
        return hook

    handles = [model.register_forward_pre_hook(on_images)]
    handles += [watch(name, m) for name, m in layers.items()]
    handles += [modules[s.layer].register_forward_pre_hook(on_synapse_input(s)) for s in declared]
    activity = Activity()
    try:
        yield activity
    finally:
        for h in handles:
            h.remove()
    counted = counts.totals()
    n = max(counts.images, 1)
    activity.images = counts.images
    activity.spikes = {name: counted.get(f"spikes/{name}", 0.0) / n for name in layers}
    activity.rates = {name: counted.get(f"spikes/{name}", 0.0) / max(counts.neuron_steps[name], 1) for name in layers}
    activity.input_spikes = counted.get("input", 0.0) / n
    activity.encoder_macs = counts.encoder_macs / n
    for s in declared:
        if s.source == POISSON_INPUT:
            activity.synops[s.layer] = activity.input_spikes * _poisson_fan_out(weights[s.layer])
        elif s.source != ANALOG_INPUT:
            activity.synops[s.layer] = counted.get(f"synops/{s.layer}", 0.0) / n
    if counts.images:
        activity.dense_macs = float(T * sum(macs_per_forward(weights[s.layer], counts.input_sizes.get(s.layer))
                                            for s in declared))


@dataclass
class _Counts:
    """The running sums of ``record_activity``: tensors on the model's device, Python ints for shapes."""

    neuron_steps: dict[str, int]
    images: int = 0
    encoder_macs: int = 0
    input_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # (H, W) each convolution was fed
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, key: str, value: torch.Tensor) -> None:  # value: a float64 scalar tensor
        self.tensors[key] = value if key not in self.tensors else self.tensors[key] + value

    def totals(self) -> dict[str, float]:
        """Every tensor sum as a float, in one host sync (float64: counts stay exact below 2^53)."""
        if not self.tensors:
            return {}
        values = torch.stack([t.to(torch.float64) for t in self.tensors.values()]).tolist()
        return dict(zip(self.tensors, values))


def _poisson_fan_out(layer: nn.Linear | nn.Conv2d) -> int:
    if not isinstance(layer, nn.Linear):
        raise NotImplementedError("a Poisson input is counted for a Linear layer only")
    return layer.out_features


class QuietOutputCounter:
    """Counts, over the forwards it watches, the images whose output layer emits fewer than
    ``min_spikes`` spikes (summed over the time steps and the output neurons).

    ``close()`` removes the hook and returns (quiet images, images), with one host sync.
    """

    def __init__(self, model: nn.Module, min_spikes: float):
        self.min_spikes = min_spikes
        self.images = 0
        self.quiet: torch.Tensor | int = 0
        self._handle = output_layer(model).register_forward_hook(self._count)

    def _count(self, _module, _inputs, spikes: torch.Tensor) -> None:
        per_image = spikes.detach().transpose(0, 1).flatten(1).sum(1)  # [T, N, ...] -> [N]
        self.quiet = self.quiet + (per_image < self.min_spikes).sum()
        self.images += per_image.numel()

    def close(self) -> tuple[int, int]:
        self._handle.remove()
        return int(self.quiet), self.images
