"""The shipped network families: FC-SNNs and CSNNs, each with the seed report's network as its defaults.

``fc_snn(...)`` and ``csnn(...)`` are network factories like any of your own (``snn.networks``):
called with the data's ``input_shape`` and ``classes`` and the trial's network parameters, they
return a module built from spikingjelly layers. With their defaults they build exactly the seed
report's networks (same layers, same initialisation; the CSNN's convolutions run channels_last,
which sums in another order than NCHW, so its currents agree to float rounding):

* FC-SNN: Poisson input over T = 100 steps -> Linear(784 -> 10, no bias) -> LIF (tau 2);
* CSNN: {Conv3x3(64)-BN-IF-MaxPool2} x 2 -> Linear(64*7*7 -> 64*4*4)-IF -> Linear(-> 10)-IF, T = 4.

The families around them: 0 to 3 hidden spiking layers of their own widths and Poisson or
direct input (FC-SNN); 1 to 3 conv blocks of their own channels, kernel size 3 or 5, the hidden
FC width and dropout (CSNN).

Both models own time: ``forward`` takes a static image batch ``[N, C, H, W]`` with intensities
in [0, 1], resets the neurons (the one place state is reset), runs T time steps in multi-step
mode and returns the firing rate of the output layer, ``[N, classes]`` in [0, 1]. The training
loop never sees T.
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import functional, layer
from torch import nn

from .config import ConfigError
from .fastpath import FastMaxPool2d, fire_and_pool, set_fused
from .layers import NEURONS, PoissonLinear, check_neuron_args, check_number, make_neuron, make_surrogate, poisson_encode
from .spikes import spiking_layers

__all__ = [
    "CSNN",
    "FCSNN",
    "csnn",
    "fc_snn",
    "poisson_encode",
    "spiking_layers",
    "NEURONS",
    "ENCODINGS",
    "MAX_HIDDEN_LAYERS",
    "MAX_BLOCKS",
]

ENCODINGS = ("poisson", "direct")
MAX_HIDDEN_LAYERS = 3
MAX_BLOCKS = 3
KERNEL_SIZES = (3, 5)
MNIST_SHAPE = (1, 28, 28)


class FCSNN(nn.Module):
    """A fully connected SNN: input coding -> [Linear -> neuron] x (hidden layers + 1), rate readout.

    Layers: ``fc1``/``sn1`` .. ``fc<d>``/``sn<d>`` for the d hidden layers, then the output layer
    ``fc``/``sn`` (the seed's names; with no hidden layer it is the whole network). The first
    Linear takes the image: as Poisson spikes (``PoissonLinear``: each pixel spikes with
    probability equal to its intensity at each step) or directly (the analog image at every step:
    its current is computed once and presented T times).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        classes: int,
        T: int,
        widths: tuple[int, ...],
        encoding: str,
        neuron_kind: str,
        tau: float,
        spike_fn,
    ):
        super().__init__()
        self.T, self.encoding = T, encoding
        sizes = [math.prod(input_shape), *widths, classes]
        self.hidden_layers = len(widths)
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            name = f"{i + 1}" if i < len(widths) else ""
            if i > 0:
                linear = layer.Linear(fan_in, fan_out, bias=False, step_mode="m")  # [T, N, in] -> [T, N, out]
            elif encoding == "poisson":
                linear = PoissonLinear(fan_in, fan_out, T)  # images [N, P] -> [T, N, out]
            else:
                linear = nn.Linear(fan_in, fan_out, bias=False)  # [N, P] -> [N, out], once per image
            self.add_module(f"fc{name}", linear)
            self.add_module(f"sn{name}", make_neuron(neuron_kind, tau, spike_fn))

    def layer_names(self) -> list[tuple[str, str]]:
        """(Linear, neuron) attribute names from the input to the output."""
        hidden = [(f"fc{i}", f"sn{i}") for i in range(1, self.hidden_layers + 1)]
        return [*hidden, ("fc", "sn")]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        x = images.flatten(1)  # [N, P]
        for i, (linear, spiking) in enumerate(self.layer_names()):
            current = getattr(self, linear)(x)
            if i == 0 and self.encoding == "direct":
                current = current.unsqueeze(0).expand(self.T, *current.shape)  # the same current at each step
            x = getattr(self, spiking)(current)  # [T, N, width]
        return x.mean(0)  # [N, classes] firing rate


class CSNN(nn.Module):
    """A convolutional SNN: {Conv(k)-BN-neuron-MaxPool2} x blocks -> Linear-neuron -> Linear-neuron, rate readout.

    The static image is presented at every one of the T steps, so the first block is the encoder.
    Its Conv-BN sees the same image at every step, so it runs once on [N] and its output is
    broadcast to [T, N]: the same values and BN batch statistics as running it on T copies (only
    BN's running-variance unbiasing uses N*H*W instead of T*N*H*W).

    Layers: ``encoder``, ``sn1``, ``pool1`` (block 1); ``conv<k>``, ``sn<k>``, ``pool<k>`` (block k);
    ``flatten``; ``fc1`` and its neuron; ``fc2`` and the output neuron (``sn<blocks+1>``,
    ``sn<blocks+2>``); with dropout, ``drop1`` before fc1 and ``drop2`` before fc2 (spikingjelly's
    multi-step Dropout: one mask for all steps).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        classes: int,
        T: int,
        channels: tuple[int, ...],
        kernel_size: int,
        fc_width: int | None,
        dropout: float,
        neuron_kind: str,
        tau: float,
        spike_fn,
    ):
        super().__init__()
        self.T, self.blocks = T, len(channels)
        in_channels, height, width = input_shape
        pad = kernel_size // 2
        for k, (c_in, c_out) in enumerate(zip((in_channels, *channels), channels), start=1):
            conv = nn.Conv2d(c_in, c_out, kernel_size, padding=pad, bias=False)
            if k == 1:
                self.encoder = nn.Sequential(conv, nn.BatchNorm2d(c_out))  # [N, C, H, W], once per image
            else:
                self.add_module(f"conv{k}", layer.SeqToANNContainer(conv, nn.BatchNorm2d(c_out)))
            self.add_module(f"sn{k}", make_neuron(neuron_kind, tau, spike_fn))
            self.add_module(f"pool{k}", FastMaxPool2d(2, step_mode="m"))
            height, width = height // 2, width // 2
        hidden = fc_width or channels[-1] * 16  # the seed's C*4*4
        self.flatten = layer.Flatten(step_mode="m")
        if dropout:
            self.drop1 = layer.Dropout(dropout, step_mode="m")
        self.fc1 = layer.Linear(channels[-1] * height * width, hidden, bias=False, step_mode="m")
        self.add_module(f"sn{self.blocks + 1}", make_neuron(neuron_kind, tau, spike_fn))
        if dropout:
            self.drop2 = layer.Dropout(dropout, step_mode="m")
        self.fc2 = layer.Linear(hidden, classes, bias=False, step_mode="m")
        self.add_module(f"sn{self.blocks + 2}", make_neuron(neuron_kind, tau, spike_fn))
        # channels_last weights make every convolution's output channels_last, whatever the image's
        # channels: oneDNN's convolutions are faster so on the CPU, for training and inference, and
        # the fused neurons and pools keep the layout; flatten still orders fc1's inputs as C, H, W
        self.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        current = self.encoder(images)  # [N, C, H, W], presented at each of the T steps
        # pool(neuron(...)), fused into one pass on the CPU (snn/fastpath/fire_pool.py)
        x = fire_and_pool(self.sn1, self.pool1, current, steps=self.T)  # [T, N, C, H/2, W/2]
        for k in range(2, self.blocks + 1):
            x = fire_and_pool(getattr(self, f"sn{k}"), getattr(self, f"pool{k}"), getattr(self, f"conv{k}")(x))
        x = self.flatten(x)  # [T, N, C*h*w]
        if hasattr(self, "drop1"):
            x = self.drop1(x)
        x = getattr(self, f"sn{self.blocks + 1}")(self.fc1(x))  # [T, N, hidden]
        if hasattr(self, "drop2"):
            x = self.drop2(x)
        return getattr(self, f"sn{self.blocks + 2}")(self.fc2(x)).mean(0)  # [N, classes] firing rate


def fc_snn(
    input_shape: tuple[int, ...] = MNIST_SHAPE,
    classes: int = 10,
    *,
    T: int = 100,
    tau: float = 2.0,
    neuron: str = "lif",
    surrogate: str = "atan",
    surrogate_alpha: float | None = None,
    encoding: str = "poisson",
    hidden_layers: int = 0,
    width_1: int = 800,
    width_2: int = 800,
    width_3: int = 800,
) -> FCSNN:
    """An FC-SNN of the family; the defaults are the seed report's (784 -> 10 LIF, tau 2, T 100, Poisson).

    T: time steps; tau: membrane time constant of LIF/PLIF neurons, in time steps (> 1); neuron:
    lif, if or plif; surrogate: atan or sigmoid, with its sharpness surrogate_alpha (None:
    spikingjelly's default, atan 2.0, sigmoid 4.0); encoding: poisson (spikes, P = intensity)
    or direct (the analog image at every step); hidden_layers: 0 to 3, the widths of those that
    exist in width_1 .. width_3.
    """
    check_fc_args(
        T=T,
        tau=tau,
        neuron=neuron,
        surrogate=surrogate,
        surrogate_alpha=surrogate_alpha,
        encoding=encoding,
        hidden_layers=hidden_layers,
        width_1=width_1,
        width_2=width_2,
        width_3=width_3,
    )
    widths = (width_1, width_2, width_3)[:hidden_layers]
    return FCSNN(
        tuple(input_shape), classes, T, widths, encoding, neuron, tau, make_surrogate(surrogate, surrogate_alpha)
    )


def check_fc_args(
    *, T, tau, neuron, surrogate, surrogate_alpha, encoding, hidden_layers, width_1, width_2, width_3
) -> None:
    """``fc_snn``'s argument rules, as ConfigError naming the argument (no network is built)."""
    check_number("T", T, int, at_least=1, rule="must be >= 1 time step")
    check_neuron_args(neuron, tau, surrogate, surrogate_alpha)
    if encoding not in ENCODINGS:
        raise ConfigError("encoding", f"must be one of {', '.join(ENCODINGS)}", encoding)
    check_number("hidden_layers", hidden_layers, int, at_least=0)
    if hidden_layers > MAX_HIDDEN_LAYERS:
        raise ConfigError("hidden_layers", f"must be <= {MAX_HIDDEN_LAYERS}", hidden_layers)
    for i, width in enumerate((width_1, width_2, width_3), start=1):
        check_number(f"width_{i}", width, int, at_least=1)


def csnn(
    input_shape: tuple[int, int, int] = MNIST_SHAPE,
    classes: int = 10,
    *,
    T: int = 4,
    channels: int = 64,
    channels_1: int | None = None,
    channels_2: int | None = None,
    channels_3: int | None = None,
    blocks: int = 2,
    kernel_size: int = 3,
    fc_width: int | None = None,
    dropout: float = 0.0,
    neuron: str = "if",
    tau: float = 2.0,
    surrogate: str = "atan",
    surrogate_alpha: float | None = None,
) -> CSNN:
    """A CSNN of the family; the defaults are the seed report's (two 3x3 blocks of 64 channels, IF, T 4).

    T: time steps; channels: every block's output channels, unless channels_k gives block k's;
    blocks: 1 to 3 conv blocks (each halves the image); kernel_size: 3 or 5; fc_width: the hidden
    FC layer's width (None: 16 x the last block's channels, the seed's C*4*4); dropout: the
    probability of spikingjelly's Dropout before each FC layer (0: none); neuron, tau, surrogate,
    surrogate_alpha: as for fc_snn.
    """
    check_csnn_args(
        input_shape=input_shape,
        T=T,
        channels=channels,
        channels_1=channels_1,
        channels_2=channels_2,
        channels_3=channels_3,
        blocks=blocks,
        kernel_size=kernel_size,
        fc_width=fc_width,
        dropout=dropout,
        neuron=neuron,
        tau=tau,
        surrogate=surrogate,
        surrogate_alpha=surrogate_alpha,
    )
    per_block = tuple(c if c is not None else channels for c in (channels_1, channels_2, channels_3))[:blocks]
    if len(input_shape) == 2:
        input_shape = (1, *input_shape)
    return CSNN(
        tuple(input_shape),
        classes,
        T,
        per_block,
        kernel_size,
        fc_width,
        float(dropout),
        neuron,
        tau,
        make_surrogate(surrogate, surrogate_alpha),
    )


def check_csnn_args(
    *,
    input_shape,
    T,
    channels,
    channels_1,
    channels_2,
    channels_3,
    blocks,
    kernel_size,
    fc_width,
    dropout,
    neuron,
    tau,
    surrogate,
    surrogate_alpha,
) -> None:
    """``csnn``'s argument rules, as ConfigError naming the argument (no network is built)."""
    check_number("T", T, int, at_least=1, rule="must be >= 1 time step")
    check_number("blocks", blocks, int, at_least=1)
    if blocks > MAX_BLOCKS:
        raise ConfigError("blocks", f"must be <= {MAX_BLOCKS}", blocks)
    check_number("channels", channels, int, at_least=1)
    for i, value in enumerate((channels_1, channels_2, channels_3), start=1):
        if value is not None:
            check_number(f"channels_{i}", value, int, at_least=1)
    if kernel_size not in KERNEL_SIZES:
        raise ConfigError("kernel_size", f"must be one of {', '.join(map(str, KERNEL_SIZES))}", kernel_size)
    if fc_width is not None:
        check_number("fc_width", fc_width, int, at_least=1)
    check_number("dropout", dropout, float, at_least=0.0, below=1.0)
    check_neuron_args(neuron, tau, surrogate, surrogate_alpha)
    side = min(input_shape[-2:])
    if side >> blocks < 1:
        raise ConfigError("blocks", f"{blocks} blocks halve a {side}-pixel side to nothing", blocks)


def describe_fc(net: dict, input_shape: tuple[int, ...], classes: int) -> str:
    """An FC-SNN of the family in words: "784-800-400-10, LIF tau 2, T 25, Poisson input"."""
    widths = [net[f"width_{i}"] for i in range(1, int(net["hidden_layers"]) + 1)]
    layers = "-".join(map(str, [math.prod(input_shape), *widths, classes]))
    return f"{layers}, {_neuron_words(net)}, T {net['T']}, {net['encoding']} input"


def describe_csnn(net: dict, input_shape: tuple[int, ...], classes: int) -> str:
    """A CSNN of the family in words: "3x3 conv 64-64, FC 1024-10, IF, T 4" (and dropout)."""
    blocks = int(net["blocks"])
    channels = [net.get(f"channels_{k}") or net["channels"] for k in range(1, blocks + 1)]
    hidden = net.get("fc_width") or channels[-1] * 16
    k = net["kernel_size"]
    dropout = f", dropout {net['dropout']:.2g}" if net.get("dropout") else ""
    return (
        f"{k}x{k} conv {'-'.join(map(str, channels))}, FC {hidden}-{classes}, {_neuron_words(net)}, "
        f"T {net['T']}{dropout}"
    )


def _neuron_words(net: dict) -> str:
    kind = str(net["neuron"]).upper()
    return kind if kind == "IF" else f"{kind} tau {net['tau']:.3g}"


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Turn the model's fast paths on (auto, triton, cuda) or off (torch: spikingjelly's reference neurons and
    the dense Poisson encoder everywhere, what the fast paths are checked against)."""
    fast = backend != "torch"
    set_fused(model, fast)
    for m in model.modules():
        if isinstance(m, PoissonLinear):
            m.sparse = fast
    return model
