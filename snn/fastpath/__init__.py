"""Faster ways to compute exactly what the seed's networks compute, and the neuron backend choice.

The same model, the same spike law, less time on a CPU (measured by ``benchmarks.train_speed``;
tests/snn/test_fast_paths.py shows each computes what it replaces):

* ``neurons``: spikingjelly's IF/LIF nodes with a fused multi-step forward and its hand-written
  backward, all steps in one call of a C kernel (``neurons.c``);
* ``fire_pool``: a neuron layer and the 2x2 max-pool after it in one pass of a C kernel
  (``fire_pool.c``): the CSNN's two blocks;
* ``native``: builds the C kernels on first use with the machine's C compiler, caches and loads
  them; without a compiler (or with ``SNN_C_KERNELS=0``) the same ops run as numpy/torch loops;
* ``pooling``: 2x2 max-pools as the maximum of four strided views (where no neuron fuses with them);
* ``poisson``: the FC-SNN's Poisson input current, drawing random numbers only for the pixels
  that can vary, four 16-bit lanes per 64-bit draw of numpy's PCG64 (seeded from torch's generator),
  the spikes meeting the weight in a C kernel (``poisson.c``);
* ``compiled``: torch.compile-or-fall-back for the large max-pools ``pooling`` runs;
* ``backends``: ``backend`` (a config field) picks the neuron implementation: ``auto`` (the fused
  CPU neurons on a CPU, spikingjelly's fastest CUDA kernels on a GPU), ``torch`` (spikingjelly's
  Torch reference everywhere, and the dense Poisson encoder: the seed's computation, op for op),
  or ``triton`` / ``cuda`` (force that spikingjelly CUDA provider; a GPU is required).
"""

from __future__ import annotations

import torch

from .backends import BACKENDS, CUDA_ONLY_BACKENDS, neuron_implementation, select_cuda_backend
from .fire_pool import fire_and_pool
from .neurons import FusedIFNode, FusedLIFNode, _FusedMultiStep
from .pooling import FastMaxPool2d, max_pool_2x2
from .poisson import (INPUT_GROUPS, LANE_BITS, bernoulli_spikes, draw_lanes, poisson_input_current, spike_thresholds,
                      uniform_lanes)

__all__ = ["BACKENDS", "CUDA_ONLY_BACKENDS", "FastMaxPool2d", "FusedIFNode", "FusedLIFNode", "fire_and_pool",
           "INPUT_GROUPS", "LANE_BITS", "bernoulli_spikes", "draw_lanes", "max_pool_2x2", "neuron_implementation",
           "poisson_input_current", "select_cuda_backend", "set_fused", "spike_thresholds", "uniform_lanes"]


def set_fused(model: torch.nn.Module, enabled: bool) -> None:
    """Switch every fused neuron and fast max-pool of ``model`` between its fast path and spikingjelly's own."""
    for m in model.modules():
        if isinstance(m, (_FusedMultiStep, FastMaxPool2d)):
            m.fused = enabled
