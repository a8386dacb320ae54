"""A spiking CNN with residual connections, SEW-ResNet style (Fang et al., NeurIPS 2021), of your own.

The stem's Conv-BN sees the analog image (dense MACs); each SEW block adds its input spikes to its
output spikes (the ADD connect function), so the layer after a block receives spike counts of 0, 1
or 2: snn-tune counts each as that many spikes. Written with spikingjelly's layers alone; the space
names the factory ``examples.sew_resnet.net:build``.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn


def conv_bn(c_in: int, c_out: int) -> layer.SeqToANNContainer:
    return layer.SeqToANNContainer(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


class SEWBlock(nn.Module):
    """conv-BN-IF-conv-BN-IF, then the block's input spikes added to its output spikes."""

    def __init__(self, channels: int, make_neuron):
        super().__init__()
        self.conv1, self.sn1 = conv_bn(channels, channels), make_neuron()
        self.conv2, self.sn2 = conv_bn(channels, channels), make_neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, N, C, H, W] spikes (or counts)
        return self.sn2(self.conv2(self.sn1(self.conv1(x)))) + x


class SEWNet(nn.Module):
    """stem (Conv-BN-IF-MaxPool) -> SEW blocks -> MaxPool -> Linear -> IF, rate readout."""

    def __init__(
        self, input_shape: tuple[int, int, int], classes: int, T: int, channels: int, blocks: int, neuron_kind: str
    ):
        super().__init__()
        self.T = T
        kinds = {"if": neuron.IFNode, "lif": neuron.LIFNode}

        def make_neuron():
            return kinds[neuron_kind](surrogate_function=surrogate.ATan(), step_mode="m")

        c_in, height, width = input_shape
        self.stem = nn.Sequential(nn.Conv2d(c_in, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.stem_sn = make_neuron()
        self.pool1 = layer.MaxPool2d(2, step_mode="m")
        self.blocks = nn.Sequential(*[SEWBlock(channels, make_neuron) for _ in range(blocks)])
        self.pool2 = layer.MaxPool2d(2, step_mode="m")
        self.flatten = layer.Flatten(step_mode="m")
        self.fc = layer.Linear(channels * (height // 4) * (width // 4), classes, bias=False, step_mode="m")
        self.out_sn = make_neuron()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        current = self.stem(images)  # [N, C, H, W]: the analog image, once
        x = self.pool1(self.stem_sn(current.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)))  # [T, N, C, H/2, W/2]
        x = self.pool2(self.blocks(x))  # [T, N, C, H/4, W/4], spike counts 0..blocks+1
        return self.out_sn(self.fc(self.flatten(x))).mean(0)  # [N, classes] firing rates


def build(
    input_shape: tuple[int, int, int] = (1, 28, 28),
    classes: int = 10,
    T: int = 4,
    channels: int = 16,
    blocks: int = 1,
    neuron: str = "if",
) -> SEWNet:
    """The network for the data's image shape and classes: ``blocks`` SEW blocks of ``channels`` channels."""
    return SEWNet(tuple(input_shape), classes, T, channels, blocks, neuron)
