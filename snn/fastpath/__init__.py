"""Faster ways to compute exactly what the seed's networks compute, and the neuron backend choice.

One fast path and one reference path per operation. The fast paths are C kernels, built on the user's
machine on first use and used only once they have checked themselves there against their reference
(``native``); the reference paths are what the seed runs: spikingjelly's own neurons, aten's max-pool,
the dense Poisson encoder. tests/snn/test_fast_paths.py and tests/snn/test_fire_pool.py show each
computes what it replaces; ``benchmarks.train_speed`` measures what it saves.

* ``neurons``: spikingjelly's IF/LIF nodes with the multi-step forward and spikingjelly's hand-written
  backward, all steps in one call of ``neurons.c``;
* ``fire_pool``: a neuron layer and the 2x2 max-pool after it in one pass of ``fire_pool.c``: the CSNN's
  two blocks (``pooling``: the max-pool it fuses with);
* ``poisson``: the FC-SNN's Poisson input current, drawing random numbers only for the pixels that can
  vary, four 16-bit lanes per 64-bit draw of numpy's PCG64 (seeded from torch's generator), the spikes
  meeting the weight in ``poisson.c``;
* ``native``: builds, checks, caches and loads the C kernels; without a compiler, a kernel that fails its
  checks, or ``SNN_C_KERNELS=0``, the reference paths run;
* ``internals``: the private parts of torch and spikingjelly read here, each guarded;
* ``backends``: ``backend`` (a config field) picks the neuron implementation: ``auto`` (the C kernels on a
  CPU, spikingjelly's fastest CUDA kernels on a GPU), ``torch`` (spikingjelly's Torch reference everywhere,
  and the dense Poisson encoder: the fast paths off, what they are checked against), or ``triton`` / ``cuda`` (force that
  spikingjelly CUDA provider; a GPU is required).
"""

from __future__ import annotations

import torch

from .backends import BACKENDS, CUDA_ONLY_BACKENDS, neuron_implementation, select_cuda_backend
from .fire_pool import fire_and_pool
from .neurons import FusedIFNode, FusedLIFNode, _FusedMultiStep
from .poisson import LANE_BITS, bernoulli_spikes, poisson_input_current, spike_thresholds, uniform_lanes
from .pooling import FastMaxPool2d

__all__ = [
    "BACKENDS",
    "CUDA_ONLY_BACKENDS",
    "FastMaxPool2d",
    "FusedIFNode",
    "FusedLIFNode",
    "fire_and_pool",
    "LANE_BITS",
    "bernoulli_spikes",
    "neuron_implementation",
    "poisson_input_current",
    "select_cuda_backend",
    "set_fused",
    "spike_thresholds",
    "uniform_lanes",
]


def set_fused(model: torch.nn.Module, enabled: bool) -> None:
    """Switch every fused neuron and max-pool of ``model`` between its fast path and spikingjelly's own."""
    for m in model.modules():
        if isinstance(m, (_FusedMultiStep, FastMaxPool2d)):
            m.fused = enabled
