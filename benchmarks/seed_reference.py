"""The seed's training loop, written after spikingjelly's examples, as the benchmark's reference.

``lif_fc_mnist.py``: torchvision MNIST + DataLoader, a single-step FC-LIF net called once per
time step on a fresh ``PoissonEncoder`` sample, MSE on the firing rate, ``reset_net`` after
each batch. ``conv_fashion_mnist.py``: the CSNN in multi-step mode on the image repeated T
times. Kept apart from ``snn`` on purpose: this is what the project is measured against.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
import torchvision
from spikingjelly.activation_based import encoding, functional, layer, neuron, surrogate
from torch import nn
from torch.utils.data import DataLoader


class SeedFCSNN(nn.Module):
    """lif_fc_mnist.py's SNN: Flatten -> Linear(784, 10, no bias) -> LIF, single-step."""

    def __init__(self, tau: float = 2.0):
        super().__init__()
        self.layer = nn.Sequential(
            layer.Flatten(),
            layer.Linear(28 * 28, 10, bias=False),
            neuron.LIFNode(tau=tau, surrogate_function=surrogate.ATan()),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class SeedCSNN(nn.Module):
    """conv_fashion_mnist.py's CSNN, multi-step: the image repeated T times."""

    def __init__(self, T: int = 4, channels: int = 64):
        super().__init__()
        self.T = T
        self.conv_fc = nn.Sequential(
            layer.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.MaxPool2d(2, 2),
            layer.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            layer.BatchNorm2d(channels),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.MaxPool2d(2, 2),
            layer.Flatten(),
            layer.Linear(channels * 7 * 7, channels * 4 * 4, bias=False),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
            layer.Linear(channels * 4 * 4, 10, bias=False),
            neuron.IFNode(surrogate_function=surrogate.ATan()),
        )
        functional.set_step_mode(self, step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.unsqueeze(0).expand(self.T, -1, -1, -1, -1)  # [N, C, H, W] -> [T, N, C, H, W]
        return self.conv_fc(x_seq).mean(0)


def loaders(root: str, batch_size: int = 128) -> tuple[DataLoader, DataLoader]:
    """The seed's loaders: torchvision MNIST, ToTensor, batch 128, shuffled train, one worker."""
    to_tensor = torchvision.transforms.ToTensor()
    train_set = torchvision.datasets.MNIST(root, train=True, transform=to_tensor, download=False)
    test_set = torchvision.datasets.MNIST(root, train=False, transform=to_tensor, download=False)
    train = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=1,
        pin_memory=torch.cuda.is_available(),
    )
    test = DataLoader(
        test_set,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=1,
        pin_memory=torch.cuda.is_available(),
    )
    return train, test


def build(model: str, device: torch.device, T: int, channels: int = 64):
    """(net, optimizer, forward) of the seed's script for ``model``; forward(img) -> firing rate."""
    torch.manual_seed(0)
    if model == "fc":
        net = SeedFCSNN().to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        encoder = encoding.PoissonEncoder()

        def forward(img):
            out_fr = 0.0
            for _ in range(T):
                out_fr += net(encoder(img))
            return out_fr / T
    else:
        net = SeedCSNN(T=T, channels=channels).to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        forward = net
    return net, optimizer, forward


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(
    model: str, loader: DataLoader, device: torch.device, T: int, warmup: int, batches: int
) -> tuple[float, int]:
    """Seconds and images of ``batches`` training batches after ``warmup`` batches, seed loop."""
    net, optimizer, forward = build(model, device, T)
    net.train()
    start, images = None, 0
    for i, (img, label) in enumerate(loader):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        optimizer.zero_grad()
        img, label = img.to(device), label.to(device)
        out_fr = forward(img)
        loss = F.mse_loss(out_fr, F.one_hot(label, 10).float())
        loss.backward()
        optimizer.step()
        _ = loss.item() * label.numel(), (out_fr.argmax(1) == label).float().sum().item()
        functional.reset_net(net)
        if i >= warmup:
            images += label.numel()
        if i == warmup + batches - 1:
            break
    _sync(device)
    return time.perf_counter() - start, images


def time_evaluation(
    model: str, loader: DataLoader, device: torch.device, T: int, warmup: int, batches: int
) -> tuple[float, int]:
    """Seconds and images of ``batches`` test batches after ``warmup``, the seed's test loop."""
    net, _, forward = build(model, device, T)
    net.eval()
    start, images = None, 0
    with torch.no_grad():
        for i, (img, label) in enumerate(loader):
            if i == warmup:
                _sync(device)
                start = time.perf_counter()
            img, label = img.to(device), label.to(device)
            out_fr = forward(img)
            loss = F.mse_loss(out_fr, F.one_hot(label, 10).float())
            _ = loss.item() * label.numel(), (out_fr.argmax(1) == label).float().sum().item()
            functional.reset_net(net)
            if i >= warmup:
                images += label.numel()
            if i == warmup + batches - 1:
                break
    _sync(device)
    return time.perf_counter() - start, images
