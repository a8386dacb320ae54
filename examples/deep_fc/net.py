"""A deeper FC-SNN of your own: two hidden LIF layers, the analog image presented at every step.

Written with spikingjelly's layers alone, as you would write it for your own work; snn-tune knows
nothing of it but the factory ``build``, which the space names as ``examples.deep_fc.net:build``.
"""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn


class DeepFC(nn.Module):
    """[N, C, H, W] images -> Linear-LIF -> Linear-LIF -> Linear-LIF -> firing rates [N, classes]."""

    def __init__(self, input_shape: tuple[int, ...], classes: int, T: int, hidden: int, tau: float):
        super().__init__()
        self.T = T
        spike = surrogate.ATan()
        self.layers = nn.Sequential(
            layer.Flatten(step_mode="m"),
            layer.Linear(math.prod(input_shape), hidden, bias=False, step_mode="m"),
            neuron.LIFNode(tau=tau, surrogate_function=spike, step_mode="m"),
            layer.Linear(hidden, hidden, bias=False, step_mode="m"),
            neuron.LIFNode(tau=tau, surrogate_function=spike, step_mode="m"),
            layer.Linear(hidden, classes, bias=False, step_mode="m"),
            neuron.LIFNode(tau=tau, surrogate_function=spike, step_mode="m"),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        x = images.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)  # [T, N, C, H, W]: the image at every step
        return self.layers(x).mean(0)  # [N, classes] firing rates


def build(
    input_shape: tuple[int, ...] = (1, 28, 28), classes: int = 10, T: int = 6, hidden: int = 256, tau: float = 2.0
) -> DeepFC:
    """The network for the data's image shape and classes, with T time steps, ``hidden`` neurons per hidden
    layer and LIF neurons of time constant ``tau``."""
    return DeepFC(input_shape, classes, T, hidden, tau)
