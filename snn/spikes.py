"""What a spiking network spends: spikes, synaptic operations (SynOps), dense MACs and an energy estimate.

``record_activity(model)`` counts, with hooks over every forward inside its block, what the
evaluator reports for a split. Nothing is declared by the model: the counts follow the network
as it runs. Every spikingjelly neuron module is a spiking layer; every ``nn.Linear`` and
``nn.Conv1d/2d/3d`` is a synaptic layer, and what reaches it decides what it spends: an input of
spikes (0/1, or whole spike counts where spikes were added, as a SEW residual does; through any
pooling, flattening or reshaping, and dropout, which is the identity at evaluation) costs SynOps, an analog input (a grey-level image, a
batch norm's output) costs dense MACs. The values decide: a black-and-white image is events. A layer whose fast path never builds its input spikes tells
their expected count itself (``expected_input_spikes``: ``snn.layers.PoissonLinear``).

Definitions, all per image (summed over the T time steps, averaged over the images):

* spikes of a spiking layer: its spikes, summed over its neurons. The total is over the
  spiking layers; a Poisson input is reported apart (``input_spikes_per_image``).
* SynOps of a synaptic layer: each spike that reaches it, counted once per synapse it drives.
  A Linear's spike drives ``out_features`` synapses; a convolution's drives ``out_channels /
  groups`` times the number of output positions whose kernel window covers it: k·k inside,
  fewer at the zero-padded border. The count is exact (spikes per input position times a
  coverage map), not the k·k·C_out upper bound. An input holding whole counts n > 1 (summed
  spike trains) counts n spikes.
* Poisson input (``PoissonLinear``): a pixel of intensity p spikes at each step with
  probability p, so its spikes are counted at their expectation, T·p per pixel.
* analog input: no spikes; the layer's dense MACs as computed, ``encoder_macs_per_image`` (the
  CSNN's first Conv runs once per image, its current presented T times, so it counts once).
* dense MACs: what an ANN of the same layers computes per image over T steps: the
  multiply-accumulates of one forward of every synaptic layer on one sample, times T (the
  output layer's steps per forward).
* energy: ``PJ_PER_SYNOP`` per SynOp (an accumulate: a 32-bit float add) plus ``PJ_PER_MAC``
  per analog MAC, in microjoules per image. An estimate from Horowitz's 45 nm figures,
  counting synaptic arithmetic only: no memory access, neuron update, pooling or BN (which
  folds into the convolution at inference).

The names are the modules' own (``sn1``, ``fc1``); a weight inside a container that holds no
other weight is named after the container (the CSNN's ``conv2`` holds its Conv2d and BN).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from spikingjelly.activation_based.neuron.base_node import BaseNode
from torch import nn

from .errors import SnnTuneError

# Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014: 45 nm CMOS
PJ_PER_SYNOP = 0.9  # pJ per 32-bit float add: a SynOp accumulates a weight into a membrane
PJ_PER_MAC = 4.6  # pJ per 32-bit float multiply (3.7 pJ) and add (0.9 pJ)

SYNAPTIC_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
SynapticLayer = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d


class NoSpikingLayer(SnnTuneError, ValueError):
    """The network holds no spikingjelly neuron: nothing spikes, so nothing here can be counted."""


def spiking_layers(model: nn.Module) -> dict[str, BaseNode]:
    """Every spiking neuron layer of a model (spikingjelly's neuron modules), by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, BaseNode)}


def output_layer_name(model: nn.Module, name: str | None = None) -> str:
    """The spiking layer the silence rule judges: ``name`` when given, else the last one the model defines."""
    layers = spiking_layers(model)
    if not layers:
        raise NoSpikingLayer(f"{type(model).__name__} holds no spikingjelly neuron module (spiking layer)")
    if name is None:
        return list(layers)[-1]
    if name not in layers:
        raise KeyError(
            f"output_layer {name!r} is not a spiking layer of the network; its spiking layers: {', '.join(layers)}"
        )
    return name


def synaptic_layers(model: nn.Module) -> dict[str, SynapticLayer]:
    """Every Linear and convolution of a model, by name: a weight's own module name, or that of the
    outermost container around it that holds no other weight (but the model itself)."""
    modules = dict(model.named_modules())
    holds: dict[str, int] = {}
    for name, m in modules.items():
        if isinstance(m, SYNAPTIC_TYPES):
            parts = name.split(".")
            for i in range(1, len(parts)):
                holds[".".join(parts[:i])] = holds.get(".".join(parts[:i]), 0) + 1
    named = {}
    for name, m in modules.items():
        if not isinstance(m, SYNAPTIC_TYPES):
            continue
        parts = name.split(".")
        outer = next((".".join(parts[:i]) for i in range(1, len(parts)) if holds[".".join(parts[:i])] == 1), name)
        named[outer] = m
    return named


def coverage(conv: nn.Conv1d | nn.Conv2d | nn.Conv3d, size: tuple[int, ...]) -> torch.Tensor:
    """How many output positions each input position of a map of ``size`` reaches: int64 of ``size``.

    k·k inside; fewer at a zero-padded border (4 at a corner of a 3x3, padding-1 convolution).
    """
    if isinstance(conv.padding, str) and conv.padding != "valid" or conv.padding_mode != "zeros":
        raise NotImplementedError(f"SynOps of a convolution with padding {conv.padding!r} / {conv.padding_mode}")
    padding = (0,) * len(size) if conv.padding == "valid" else conv.padding
    result = torch.ones((), dtype=torch.int64)
    for n, k, s, p, d in zip(size, conv.kernel_size, conv.stride, padding, conv.dilation):
        result = torch.tensordot(result, _axis_coverage(n, k, s, p, d), dims=0)
    return result


def conv_coverage(conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """``coverage`` of a 2-D convolution on a [height, width] map."""
    return coverage(conv, (height, width))


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


def holds_spikes(x: torch.Tensor) -> bool:
    """Whether x holds spikes: whole, non-negative numbers (0/1 spikes, or counts where trains were added)."""
    if x.dtype == torch.bool:
        return True
    if not x.is_floating_point():
        return bool((x >= 0).all())
    return bool(torch.logical_and(x >= 0, x == torch.trunc(x)).all())


def synops(layer: SynapticLayer, spikes: torch.Tensor) -> torch.Tensor:
    """SynOps a spike tensor drives into ``layer``, exactly, as a float64 scalar tensor.

    spikes: [..., in_features] for a Linear, [..., C_in, *spatial] for a convolution; any leading
    dims (time, batch); a value n counts n spikes.
    """
    if isinstance(layer, nn.Linear):
        return count_spikes(spikes) * layer.out_features
    spatial = spikes.shape[-(layer.weight.dim() - 2) :]
    positions = math.prod(spatial)
    if spikes.numel() // positions < 2**24:  # each position's float32 sum stays exact
        per_position = spikes.sum(dim=tuple(range(spikes.dim() - len(spatial))), dtype=torch.float32).double()
    else:
        per_position = spikes.flatten(0, -len(spatial) - 1).sum(0, dtype=torch.float64)
    covered = coverage(layer, tuple(spatial)).to(per_position.device, torch.float64)
    return (per_position * covered).sum() * (layer.out_channels // layer.groups)


def macs_per_forward(layer: SynapticLayer, input_size: tuple[int, ...] | None = None) -> int:
    """Multiply-accumulates of one forward of ``layer`` on one sample; a convolution needs its input's spatial size."""
    if isinstance(layer, nn.Linear):
        return layer.in_features * layer.out_features
    padding = (0,) * len(input_size) if layer.padding == "valid" else layer.padding
    outputs = math.prod(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(input_size, layer.kernel_size, layer.stride, padding, layer.dilation)
    )
    return layer.out_channels * outputs * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)


@dataclass
class Activity:
    """What ``record_activity`` counted, per image; ``metrics()`` gives it as flat record entries."""

    images: int = 0
    steps: float = 0.0  # time steps per forward (the output layer's)
    rates: dict[str, float] = field(default_factory=dict)  # spikes per neuron per step, by spiking layer
    spikes: dict[str, float] = field(default_factory=dict)  # spikes per image, by spiking layer
    synops: dict[str, float] = field(default_factory=dict)  # SynOps per image, by synaptic layer with spike input
    input_spikes: float = 0.0  # expected Poisson input spikes per image (0 without a Poisson input)
    encoder_macs: float = 0.0  # MACs per image of the synaptic layers whose input is analog
    dense_macs: float = 0.0  # MACs per image of an ANN of the same layers over T steps
    order: list[str] = field(default_factory=list)  # spiking layers in the order they first ran

    @property
    def energy_estimate_uj(self) -> float:
        """Synaptic energy per image in µJ: PJ_PER_SYNOP per SynOp plus PJ_PER_MAC per analog MAC."""
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

    Yields an ``Activity`` that is filled in when the block ends. Whether a synaptic layer's input
    holds spikes is decided on the block's first forward, by an exact check of every value (a
    network's wiring decides it: a layer fed spikes is fed spikes on every batch); that check and
    the final sums are the only reads off the device. The hooks add to tensors on the model's
    device (and to Python ints for shapes). NoSpikingLayer when the model holds no spiking layer.
    """
    layers = spiking_layers(model)
    output = output_layer_name(model)
    weights = synaptic_layers(model)
    counts = _Counts(neuron_steps=dict.fromkeys(layers, 0))

    def on_images(_module, inputs):
        counts.forwards += 1
        counts.images += len(inputs[0])

    def on_spikes(name: str):
        def counter(count: torch.Tensor, neuron_steps: int, steps: int) -> None:
            counts.add(f"spikes/{name}", count)
            counts.neuron_steps[name] += neuron_steps
            if name not in counts.order:
                counts.order.append(name)
            if name == output:
                counts.output_steps += steps

        return counter

    def watch(name: str, layer: BaseNode):
        """The fused neurons count their own spikes (also when fused with their pool); others by a hook."""
        counter = on_spikes(name)
        if hasattr(layer, "register_spike_counter"):
            return layer.register_spike_counter(counter)
        return layer.register_forward_hook(
            lambda module, _inputs, spikes: counter(
                count_spikes(spikes), spikes.numel(), spikes.shape[0] if module.step_mode == "m" else 1
            )
        )

    def on_synapse_input(name: str, layer: SynapticLayer):
        spatial = layer.weight.dim() - 2  # 0 for a Linear

        def hook(module, inputs):
            x = inputs[0].detach()
            if spatial:
                counts.input_sizes[name] = tuple(x.shape[-spatial:])
            counts.ran.setdefault(name, None)
            samples = math.prod(x.shape[: -(spatial + 1)])
            if hasattr(module, "expected_input_spikes"):  # it builds its spikes from x itself
                counts.add(f"expected/{name}", module.expected_input_spikes(x))
            elif _holds_spikes_here(counts.spikes_in, name, x):
                counts.add(f"synops/{name}", synops(layer, x))
            else:
                counts.analog_macs += samples * macs_per_forward(layer, counts.input_sizes.get(name))

        return hook

    handles = [model.register_forward_pre_hook(on_images)]
    handles += [watch(name, m) for name, m in layers.items()]
    handles += [m.register_forward_pre_hook(on_synapse_input(name, m)) for name, m in weights.items()]
    activity = Activity()
    try:
        yield activity
    finally:
        for h in handles:
            h.remove()
    counted = counts.totals()
    n = max(counts.images, 1)
    activity.images = counts.images
    activity.order = list(counts.order)
    activity.steps = counts.output_steps / max(counts.forwards, 1)
    activity.spikes = {name: counted.get(f"spikes/{name}", 0.0) / n for name in layers}
    activity.rates = {name: counted.get(f"spikes/{name}", 0.0) / max(counts.neuron_steps[name], 1) for name in layers}
    expected = {name: counted[f"expected/{name}"] / n for name in weights if f"expected/{name}" in counted}
    activity.input_spikes = float(sum(expected.values()))
    activity.encoder_macs = counts.analog_macs / n
    activity.synops = {
        name: expected[name] * weights[name].out_features if name in expected else counted[f"synops/{name}"] / n
        for name in weights
        if name in expected or f"synops/{name}" in counted
    }
    if counts.images:
        activity.dense_macs = activity.steps * sum(
            macs_per_forward(weights[name], counts.input_sizes.get(name)) for name in counts.ran
        )


def _holds_spikes_here(decided: dict[str, bool], name: str, x: torch.Tensor) -> bool:
    """Whether synaptic layer ``name``'s input holds spikes: checked on its first forward, then remembered."""
    if name not in decided:
        decided[name] = holds_spikes(x)
    return decided[name]


@contextlib.contextmanager
def record_firing_rates(model: nn.Module) -> Iterator[dict[str, float]]:
    """Collect each spiking layer's mean firing rate (spikes per neuron per step) over the forwards in the block.

    Yields a dict that, once the block has run, maps each layer name to the fraction of
    (neuron, time step) pairs that spiked (``record_activity`` counts these and more in one go).
    """
    rates: dict[str, float] = {}
    with record_activity(model) as activity:
        yield rates
    rates.update(activity.rates)


@dataclass
class _Counts:
    """The running sums of ``record_activity``: tensors on the model's device, Python ints for shapes."""

    neuron_steps: dict[str, int]
    images: int = 0
    forwards: int = 0
    output_steps: int = 0
    analog_macs: int = 0
    order: list[str] = field(default_factory=list)
    ran: dict[str, None] = field(default_factory=dict)  # synaptic layers that ran, in order
    spikes_in: dict[str, bool] = field(default_factory=dict)  # whether each synaptic layer's input holds spikes
    input_sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # spatial size each convolution was fed
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, key: str, value: torch.Tensor) -> None:  # value: a float64 scalar tensor
        self.tensors[key] = value if key not in self.tensors else self.tensors[key] + value

    def totals(self) -> dict[str, float]:
        """Every tensor sum as a float, in one host sync (float64: counts stay exact below 2^53)."""
        if not self.tensors:
            return {}
        values = torch.stack([t.to(torch.float64) for t in self.tensors.values()]).tolist()
        return dict(zip(self.tensors, values))


class QuietOutputCounter:
    """Counts, over the forwards it watches, the images whose output layer emits fewer spikes than
    ``min_spikes(T)`` (summed over the T time steps of a forward and the output neurons).

    ``min_spikes`` maps the output layer's steps per forward to the threshold. The output layer is
    ``output_layer`` (a module name), else the last spiking layer the model defines. It may run in
    multi-step mode ([T, N, ...] once per forward) or single-step mode ([N, ...] T times).
    ``close()`` removes the hooks and returns (quiet images, images), with one host sync.
    """

    def __init__(self, model: nn.Module, min_spikes, output_layer: str | None = None):
        self.min_spikes = min_spikes
        self.images = 0
        self.quiet: torch.Tensor | int = 0
        self._per_image: torch.Tensor | None = None  # this forward's spikes per image so far
        self._steps = 0
        layer = spiking_layers(model)[output_layer_name(model, output_layer)]
        self._handles = [layer.register_forward_hook(self._count), model.register_forward_hook(self._judge)]

    def _count(self, module, _inputs, spikes: torch.Tensor) -> None:
        if module.step_mode == "m":  # [T, N, ...]
            per_image, steps = spikes.detach().transpose(0, 1).flatten(1).sum(1), spikes.shape[0]
        else:  # [N, ...], one of the forward's steps
            per_image, steps = spikes.detach().flatten(1).sum(1), 1
        self._per_image = per_image if self._per_image is None else self._per_image + per_image
        self._steps += steps

    def _judge(self, *_args) -> None:
        if self._per_image is None:
            return
        self.quiet = self.quiet + (self._per_image < self.min_spikes(self._steps)).sum()
        self.images += self._per_image.numel()
        self._per_image, self._steps = None, 0

    def close(self) -> tuple[int, int]:
        for handle in self._handles:
            handle.remove()
        return int(self.quiet), self.images
