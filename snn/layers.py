"""Building blocks of spiking networks, for the shipped models and for networks of your own.

* ``make_surrogate`` / ``make_neuron``: spikingjelly's surrogate gradients and multi-step neurons by
  name; ``lif`` and ``if`` are spikingjelly's LIFNode and IFNode with the fused CPU path of
  ``snn.fastpath`` (same spikes, same gradients).
* ``poisson_encode``: the Poisson rate code of an image batch, ``[N, ...] -> [T, N, ...]``.
* ``PoissonLinear``: ``Linear(poisson_encode(images, T))`` in one module, ``[N, P] -> [T, N, O]``;
  on a CPU it draws random numbers only for the pixels that can vary (``snn.fastpath.poisson``).
  It tells the spike accounting (``snn.spikes``) the spikes it feeds its weights, at their
  expectation, since its fast path never builds them.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import neuron, surrogate
from spikingjelly.activation_based.neuron.base_node import BaseNode
from torch import nn
from torch.nn import functional as F

from .config import ConfigError
from .fastpath import FusedIFNode, FusedLIFNode, poisson_input_current

NEURONS = ("lif", "if", "plif")
SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid}
DEFAULT_ALPHA = {"atan": 2.0, "sigmoid": 4.0}  # spikingjelly's ATan() and Sigmoid() defaults
# The sparse per-spike kernel adds a pixel's O weights per spike; the dense path multiplies [T*N, P] spikes by
# [P, O] at BLAS speed, so its advantage grows with O. Measured (128 MNIST images, T = 100, forward and
# backward, dense time / sparse time): 1 thread 13.2x at O = 10, 4.6x at 64, 2.2x at 256, 1.44x at 800;
# 2 threads 6.2x at 64, 1.52x at 800, 1.26x at 2048. Beyond the widths measured, the dense path.
POISSON_SPARSE_MAX_OUT = 2048


def make_surrogate(name: str, alpha: float | None) -> surrogate.SurrogateFunctionBase:
    """spikingjelly's surrogate by name; alpha None keeps spikingjelly's default."""
    cls = SURROGATES[name]
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


def check_neuron_args(neuron_kind: str, tau: float, surrogate_name: str, surrogate_alpha: float | None) -> None:
    """The neuron arguments' rules, as ConfigError naming the argument."""
    if neuron_kind not in NEURONS:
        raise ConfigError("neuron", f"must be one of {', '.join(NEURONS)}", neuron_kind)
    if surrogate_name not in SURROGATES:
        raise ConfigError("surrogate", f"must be one of {', '.join(SURROGATES)}", surrogate_name)
    check_number("tau", tau, float, above=1.0, rule="must be > 1 (spikingjelly's LIF rule)")
    if surrogate_alpha is not None:
        check_number("surrogate_alpha", surrogate_alpha, float, above=0.0)


def check_number(
    name: str,
    value,
    kind: type,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    rule: str | None = None,
) -> None:
    """ConfigError unless ``value`` is a finite number of ``kind`` within the bounds."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        number = isinstance(value, int) and not isinstance(value, bool)  # 3.0 is refused: a factory takes it as is
    if not number or value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"must be {'an integer' if kind is int else 'a finite number'}", value)
    bounds = [
        (above, lambda b: value > b, "must be > {:g}"),
        (at_least, lambda b: value >= b, "must be >= {:g}"),
        (below, lambda b: value < b, "must be < {:g}"),
    ]
    for bound, holds, default_rule in bounds:
        if bound is not None and not holds(bound):
            raise ConfigError(name, rule or default_rule.format(bound), value)


def poisson_encode(images: torch.Tensor, T: int) -> torch.Tensor:
    """Poisson rate code: each pixel spikes at each step with probability = its intensity.

    images: [N, ...] in [0, 1]  ->  spikes: [T, N, ...] of 0.0/1.0
    """
    noise = torch.rand((T, *images.shape), device=images.device, dtype=images.dtype)
    return (noise < images).to(images.dtype)


class PoissonLinear(nn.Linear):
    """``Linear(poisson_encode(images, T))``: images [N, P] in [0, 1] -> input current [T, N, out_features].

    A pixel spikes at each of the T steps with probability equal to its intensity. On a CPU with
    few outputs the current comes from ``snn.fastpath.poisson_input_current`` (random numbers only
    for the pixels that can vary, the same spike law); ``sparse = False`` (backend torch) keeps the
    dense encoder and one matrix product. The weights are an ``nn.Linear``'s (same initialisation,
    same ``weight`` name), so a network built with it loads and exports as one.
    """

    def __init__(self, in_features: int, out_features: int, T: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.T = T
        self.sparse = True

    def expected_input_spikes(self, images: torch.Tensor) -> torch.Tensor:
        """The spikes this layer's weights receive for ``images``, at their expectation: T times the
        summed intensity (a float64 scalar). ``snn.spikes`` counts SynOps from it."""
        return images.sum(dtype=torch.float64) * self.T

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1)  # [N, P]
        if (
            self.sparse
            and flat.device.type == "cpu"
            and self.bias is None
            and self.out_features <= POISSON_SPARSE_MAX_OUT
        ):
            return poisson_input_current(flat, self.weight, self.T)  # [T, N, O]
        return F.linear(poisson_encode(flat, self.T), self.weight, self.bias)  # [T, N, P] -> [T, N, O]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, T={self.T}"
