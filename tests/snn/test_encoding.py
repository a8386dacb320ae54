"""Poisson rate coding: each pixel spikes at each step with probability equal to its intensity."""

from __future__ import annotations

import pytest
import torch

from snn.fastpath import poisson_input_current
from snn.layers import poisson_encode


def five_sigma(p: torch.Tensor, n: int) -> torch.Tensor:
    """Five binomial standard deviations of a rate estimated from n Bernoulli(p) draws."""
    return 5 * (p * (1 - p) / n).sqrt()


def test_spike_rate_per_intensity_level_matches_the_intensity():
    levels = torch.linspace(0, 1, 11)  # 0.0, 0.1, ..., 1.0
    images = levels.repeat_interleave(200).view(11, 200)  # [11 levels, 200 pixels]
    T = 500
    torch.manual_seed(0)
    spikes = poisson_encode(images, T)  # [T, 11, 200]
    rate = spikes.mean(dim=(0, 2))  # [11], each from T * 200 draws
    assert (rate - levels).abs().le(five_sigma(levels, T * 200) + 1e-7).all(), (rate, levels)
    assert rate[0] == 0.0, "a black pixel never spikes"
    assert rate[-1] == 1.0, "a white pixel spikes at every step"


def test_every_pixel_of_an_image_spikes_at_its_own_rate():
    torch.manual_seed(1)
    image = torch.rand(1, 1, 28, 28)
    T = 2000
    rate = poisson_encode(image, T).mean(0)  # [1, 1, 28, 28]
    assert rate.shape == image.shape
    assert (rate - image).abs().le(five_sigma(image, T) + 1e-7).all()
    # and not trivially: the rates do vary with the pixels
    assert torch.corrcoef(torch.stack([rate.flatten(), image.flatten()]))[0, 1] > 0.99


def test_spikes_are_independent_across_time_steps():
    torch.manual_seed(2)
    p = 0.5
    spikes = poisson_encode(torch.full((4000,), p), T=2)  # [2, 4000]
    both = (spikes[0] * spikes[1]).mean()  # P(spike at t and t+1) = p^2 if independent
    assert both.item() == pytest.approx(p * p, abs=5 * (p * p * (1 - p * p) / 4000) ** 0.5)


def test_the_fc_models_fast_input_spikes_mnist_levels_at_their_rates_independently():
    """``poisson_input_current`` (16-bit lanes, only fractional pixels drawn) keeps this law."""
    levels = torch.arange(256, dtype=torch.float32).div_(255.0)  # every uint8 intensity k/255
    images = levels.repeat(4, 1)  # [4 images, 256 pixels]
    T = 3000
    torch.manual_seed(3)
    spikes = poisson_input_current(images, torch.eye(256), T)  # identity weight: [T, 4, 256] spikes
    rate = spikes.mean(dim=(0, 1))  # [256], each from 4 * T steps
    assert (rate - levels).abs().le(five_sigma(levels, 4 * T) + 1e-4).all()  # + the 7.6e-6 lane bias
    assert rate[0] == 0.0 and rate[-1] == 1.0
    both = (spikes[1:] * spikes[:-1]).mean(dim=(0, 1))  # P(spike at t and t+1) = p^2 if independent
    assert (both - levels**2).abs().le(five_sigma(levels**2, 4 * (T - 1)) + 1e-4).all()
