"""Network factories of a user's, good and broken, for the tests of snn.networks and the commands."""

from __future__ import annotations

import math

import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn


class Tiny(nn.Module):
    """Flatten -> Linear -> IF, the image at every step: a minimal network of a user's."""

    def __init__(self, input_shape, classes, width: int, T: int, extra_neuron: bool = False):
        super().__init__()
        self.T = T
        self.fc = layer.Linear(math.prod(input_shape), classes * width, bias=False, step_mode="m")
        self.sn = neuron.IFNode(surrogate_function=surrogate.ATan(), step_mode="m")
        self.classes, self.width = classes, width
        if extra_neuron:  # defined last, never run: the output layer is not the last spiking layer defined
            self.unused = neuron.IFNode(step_mode="m")

    def forward(self, images):
        functional.reset_net(self)
        x = images.flatten(1).unsqueeze(0).repeat(self.T, 1, 1)  # [T, N, P]
        rates = self.sn(self.fc(x)).mean(0)  # [N, classes * width]
        return rates.view(len(images), self.classes, self.width).mean(2)  # [N, classes]


def tiny(input_shape=(1, 28, 28), classes=10, width: int = 2, T: int = 2) -> Tiny:
    return Tiny(input_shape, classes, width, T)


def raises(input_shape, classes, width: int = 2):
    raise ValueError("width must be even")


def not_a_module(input_shape, classes):
    return "a network"


def wrong_shape(input_shape, classes):
    net = Tiny(input_shape, classes + 1, 1, 2)
    return net


def no_spiking_layer(input_shape, classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), classes))


def output_not_last(input_shape, classes):
    return Tiny(input_shape, classes, 1, 2, extra_neuron=True)


def needs_depth(input_shape, classes, depth: int, width: int = 4):
    return Tiny(input_shape, classes, width, depth)


def data_factory(root):
    """A tiny dataset: 200 train and 100 test images of 3 classes (a bright square in one of three places)."""
    generator = torch.Generator().manual_seed(0)

    def split(n):
        labels = torch.arange(n) % 3
        images = torch.rand(n, 1, 12, 12, generator=generator) * 0.2
        for i, label in enumerate(labels.tolist()):
            images[i, 0, 4 * label : 4 * label + 4, 4:8] = 1.0
        return images, labels

    return {"train": split(200), "test": split(100), "classes": 3}


def broken_data(root):
    x = torch.zeros(10, 1, 4, 4)
    return (x, torch.zeros(9, dtype=torch.long)), (x, torch.zeros(10, dtype=torch.long))


class Stateful(nn.Module):
    """A network that never resets its neurons itself: the trainer must, between batches."""

    def __init__(self, input_shape, classes):
        super().__init__()
        self.fc = layer.Linear(math.prod(input_shape), classes, bias=False, step_mode="m")
        self.sn = neuron.IFNode(surrogate_function=surrogate.ATan(), step_mode="m")
        with torch.no_grad():
            self.fc.weight.fill_(0.008)

    def forward(self, images):
        x = images.flatten(1).unsqueeze(0).repeat(3, 1, 1)  # [3, N, P]
        return self.sn(self.fc(x)).mean(0)


def stateful(input_shape, classes):
    return Stateful(input_shape, classes)
