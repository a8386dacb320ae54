"""The seed report's two spiking networks, built from spikingjelly's multi-step neurons.

Both models own time: ``forward`` takes a static image batch ``[N, 1, 28, 28]`` with
pixel intensities in [0, 1], resets the neurons (the one place state is reset), runs
T time steps in multi-step mode and returns the firing rate of the output layer,
``[N, 10]`` in [0, 1]. The training loop never sees T.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from spikingjelly.activation_based.neuron.base_node import BaseNode
from torch import nn

from .config import RunConfig
from .fastpath import FastMaxPool2d, FusedIFNode, FusedLIFNode, fire_and_pool, poisson_input_current, set_fused
from .spikes import ANALOG_INPUT, POISSON_INPUT, Synapses, record_activity
from .spikes import spiking_layers as spiking_layers  # re-exported: its home was here

_SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid}


def make_surrogate(name: str, alpha: float | None) -> surrogate.SurrogateFunctionBase:
    """spikingjelly's surrogate by name; alpha None keeps spikingjelly's default."""
    cls = _SURROGATES[name]
    return cls() if alpha is None else cls(alpha=float(alpha))


def make_neuron(kind: str, tau: float, spike_fn: surrogate.SurrogateFunctionBase) -> BaseNode:
    """A multi-step spiking neuron layer: lif, if, or plif (tau is PLIF's initial value).

    lif and if are spikingjelly's LIFNode and IFNode with the fused CPU multi-step path of
    ``snn.fastpath`` (same spikes, same gradients; ``set_fused(model, False)`` turns it off).
    """
    if kind == "lif":
        return FusedLIFNode(tau=float(tau), surrogate_function=spike_fn, step_mode="m")
    if kind == "plif":
        return neuron.ParametricLIFNode(init_tau=float(tau), surrogate_function=spike_fn, step_mode="m")
    return FusedIFNode(surrogate_function=spike_fn, step_mode="m")


def poisson_encode(images: torch.Tensor, T: int) -> torch.Tensor:
    """Poisson rate code: each pixel spikes at each step with probability = its intensity.

    images: [N, ...] in [0, 1]  ->  spikes: [T, N, ...] of 0.0/1.0
    """
    noise = torch.rand((T, *images.shape), device=images.device, dtype=images.dtype)
    return (noise < images).to(images.dtype)


class FCSNN(nn.Module):
    """FC-SNN of the seed report: Flatten -> Linear(784 -> 10, no bias) -> LIF.

    Seed defaults: LIF neuron with tau=2, ATan surrogate, T=100 Poisson-encoded steps,
    output = firing rate of the 10 neurons over T; trained with MSE against one-hot,
    Adam lr 1e-3, batch 128, 100 epochs (92.89% best test accuracy reported).
    """

    # what drives each synaptic layer, for snn.spikes' SynOps (the output layer drives nothing)
    synapses = (Synapses("fc", POISSON_INPUT),)
    output_layer = "sn"

    def __init__(self, T: int = 100, tau: float = 2.0, neuron_kind: str = "lif",
                 spike_fn: surrogate.SurrogateFunctionBase | None = None):
        super().__init__()
        self.T = T
        # CPU: poisson_input_current (same spike law, ~3x fewer draws); on a GPU random numbers are
        # cheap and its per-batch host sync is not, so the dense poisson_encode runs there
        self.sparse_input = True
        self.fc = layer.Linear(28 * 28, 10, bias=False, step_mode="m")
        self.sn = make_neuron(neuron_kind, tau, spike_fn or surrogate.ATan())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        if self.sparse_input and images.device.type == "cpu":
            current = poisson_input_current(images.flatten(1), self.fc.weight, self.T)  # [T, N, 10]
        else:
            current = self.fc(poisson_encode(images.flatten(1), self.T))  # [T, N, 784] -> [T, N, 10]
        return self.sn(current).mean(0)  # [N, 10] firing rate


class CSNN(nn.Module):
    """CSNN of the seed report: {Conv3x3(C)-BN-IF-MaxPool2} x2 -> Linear(C*7*7 -> C*4*4)-IF
    -> Linear(C*4*4 -> 10)-IF, output = mean firing rate over T.

    The static image is presented at every one of the T steps, so the first conv-BN-IF
    block is the encoder. Seed defaults: C=64, IF neurons, ATan surrogate, T=4, SGD lr 0.1
    momentum 0.9, 64 epochs (99.33% best test accuracy reported).

    The first Conv-BN sees the same image at every step, so it runs once on [N] and its
    output is broadcast to [T, N]: the same values and BN batch statistics as running it
    on T copies (only BN's running-variance unbiasing uses N*H*W instead of T*N*H*W).
    """

    # what drives each synaptic layer, for snn.spikes' SynOps (sn1, sn2 through their max-pools;
    # the output layer sn4 drives nothing)
    synapses = (Synapses("encoder", ANALOG_INPUT), Synapses("conv2", "sn1"), Synapses("fc1", "sn2"),
                Synapses("fc2", "sn3"))
    output_layer = "sn4"

    def __init__(self, T: int = 4, channels: int = 64, neuron_kind: str = "if", tau: float = 2.0,
                 spike_fn: surrogate.SurrogateFunctionBase | None = None):
        super().__init__()
        self.T = T
        C = channels
        spike_fn = spike_fn or surrogate.ATan()
        self.encoder = nn.Sequential(nn.Conv2d(1, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.sn1 = make_neuron(neuron_kind, tau, spike_fn)
        self.pool1 = FastMaxPool2d(2, step_mode="m")
        self.conv2 = layer.SeqToANNContainer(nn.Conv2d(C, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        self.sn2 = make_neuron(neuron_kind, tau, spike_fn)
        self.pool2 = FastMaxPool2d(2, step_mode="m")
        self.flatten = layer.Flatten(step_mode="m")
        self.fc1 = layer.Linear(C * 7 * 7, C * 4 * 4, bias=False, step_mode="m")
        self.sn3 = make_neuron(neuron_kind, tau, spike_fn)
        self.fc2 = layer.Linear(C * 4 * 4, 10, bias=False, step_mode="m")
        self.sn4 = make_neuron(neuron_kind, tau, spike_fn)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        if not torch.is_grad_enabled():
            # inference: channels_last activations make oneDNN's convolutions and pooling ~1.5x
            # faster on CPU (the fused neurons keep the layout); training stays NCHW on CPU, where
            # channels_last batch-norm backward is slower than what the forward gains
            images = images.contiguous(memory_format=torch.channels_last)
        current = self.encoder(images)  # [N, C, 28, 28], presented at each of the T steps
        # pool(neuron(...)), fused into one pass on the CPU (snn/fastpath/fire_pool.py)
        x = fire_and_pool(self.sn1, self.pool1, current, steps=self.T)  # [T, N, C, 14, 14]
        x = fire_and_pool(self.sn2, self.pool2, self.conv2(x))  # [T, N, C, 7, 7]
        x = self.sn3(self.fc1(self.flatten(x)))  # [T, N, C*16]
        return self.sn4(self.fc2(x)).mean(0)  # [N, 10] firing rate


def build_model(config: RunConfig) -> nn.Module:
    """The network a config describes, on the CPU."""
    spike_fn = make_surrogate(config.surrogate, config.surrogate_alpha)
    if config.model == "fc":
        model = FCSNN(T=config.T, tau=config.tau, neuron_kind=config.neuron, spike_fn=spike_fn)
        model.sparse_input = config.backend != "torch"
    else:
        model = CSNN(T=config.T, channels=config.channels, neuron_kind=config.neuron, tau=config.tau,
                     spike_fn=spike_fn)
    set_fused(model, config.backend != "torch")
    return model


@contextlib.contextmanager
def record_firing_rates(model: nn.Module) -> Iterator[dict[str, float]]:
    """Collect each spiking layer's mean firing rate (spikes per neuron per step) per forward.

    Yields a dict that, once the block has run, maps each layer name to the fraction of
    (neuron, time step) pairs that spiked over all forwards inside the block.
    (``snn.spikes.record_activity`` counts these and the spikes, SynOps and MACs in one go.)
    """
    rates: dict[str, float] = {}
    with record_activity(model) as activity:
        yield rates
    rates.update(activity.rates)
