"""spikingjelly's IF/LIF nodes with a fused multi-step forward and hand-written backward on the CPU.

spikingjelly 2.0's multi-step IF/LIF neurons run on the CPU as its Torch reference: about ten
autograd-recorded tensor ops per time step, each a full pass over ``[N, ...]``. ``FusedIFNode`` /
``FusedLIFNode`` are spikingjelly's own ``IFNode`` / ``LIFNode`` whose multi-step forward and
backward (spikingjelly's hand-written one, ``_ops/*/cpu.py``) run all steps in one call of a C
kernel (``neurons.c``, built by ``native`` on first use). Without a C compiler (or with
``SNN_C_KERNELS=0``) they run the same ops as a loop of three to five in-place ops per step: numpy
for small steps, torch for large ones. Spikes are bit-identical to spikingjelly's; gradients agree
to float rounding (tests/snn/test_fast_paths.py). Half-precision currents are cast to float32 first;
anything outside the fused profile (CUDA, other dtypes, soft reset, ``detach_reset``, custom
surrogates) runs spikingjelly's own path.
"""

from __future__ import annotations

import ctypes
import math
from collections import OrderedDict

import numpy as np
import torch
from spikingjelly.activation_based import neuron
from torch.utils.hooks import RemovableHandle

from ..spikes import count_spikes
from . import native

try:  # spikingjelly 2.x internals: the surrogate ids and gradients its own kernels use
    from spikingjelly._ops.surrogate import _surrogate_gradient, _surrogate_spec
except ImportError:  # another spikingjelly layout: every neuron takes spikingjelly's own path
    _surrogate_gradient = _surrogate_spec = None

# Below this many neurons per step, torch's per-op dispatch (~2 us) outweighs the arithmetic and
# numpy's ufuncs (~0.5 us a call, same IEEE float32 ops) run the time loop ~2.5x faster: the FC-SNN's
# [100, 128, 10] LIF layer. Larger steps stay in torch, which spreads each op over the threads.
_NUMPY_MAX_STEP_NUMEL = 16384


def _multi_step_if_lif(x_seq: torch.Tensor, v: torch.Tensor, tau: float | None, threshold: float,
                       keep_charge: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Forward of IF (tau None) or LIF (decay_input, v_reset 0) over [T, ...] without autograd.

    Same float ops as spikingjelly's reference: H = V + X (IF) or V + (X - V) / tau (LIF),
    S = (H >= threshold), V = S * 0 + (1 - S) * H, written here as H - H * S (equal bits).
    Returns spikes [T, ...], the last V [...], and H [T, ...] when ``keep_charge``.
    """
    spikes = torch.empty_strided(x_seq.shape, _dense_strides(x_seq), dtype=x_seq.dtype, device=x_seq.device)
    if x_seq.device.type == "cpu" and _same_layout(x_seq, spikes) and (lib := _KERNELS.get()) is not None:
        charge = torch.empty_like(spikes) if keep_charge else None
        v = _like(v.detach(), spikes[0], copy=True)  # the kernel updates it in place to the last V
        layer = _Layer(len(x_seq), spikes[0].numel(), 0.0 if tau is None else tau, threshold)
        lib.if_lif_forward(x_seq.data_ptr(), x_seq.stride(0), v.data_ptr(), layer, spikes.data_ptr(),
                           None if charge is None else charge.data_ptr(), torch.get_num_threads())
        return spikes, v, charge
    charge = torch.empty_like(spikes) if keep_charge else torch.empty_like(spikes[0]).expand_as(spikes)
    if spikes[0].numel() <= _NUMPY_MAX_STEP_NUMEL and x_seq.device.type == "cpu":
        v = torch.from_numpy(_if_lif_steps_numpy(x_seq.detach().numpy(), v.detach().numpy(), tau, threshold,
                                                 spikes.numpy(), charge.numpy()))
    else:
        v = _if_lif_steps_torch(x_seq, v, tau, threshold, spikes, charge)
    return spikes, v, charge if keep_charge else None


def _if_lif_steps_torch(x_seq, v, tau, threshold, spikes, charge):
    """The time loop of ``_multi_step_if_lif`` in torch ops; fills spikes and charge [T, ...], returns V."""
    v_next = torch.empty_like(spikes[0])
    for t in range(x_seq.shape[0]):
        h = charge[t]  # a stride-0 scratch step when the charge is not kept
        if tau is None:
            torch.add(v, x_seq[t], out=h)
        else:
            torch.sub(x_seq[t], v, out=h).div_(tau).add_(v)
        torch.ge(h, threshold, out=spikes[t])
        v, v_next = torch.addcmul(h, h, spikes[t], value=-1.0, out=v_next), v
        if t == 0:
            v_next = torch.empty_like(v)  # never write into the caller's initial state
    return v


def _if_lif_steps_numpy(x_seq, v, tau, threshold, spikes, charge):
    """``_if_lif_steps_torch`` on numpy views of the same memory (same ops, same bits); returns V."""
    v = v.copy()  # never write into the caller's initial state
    for t in range(x_seq.shape[0]):
        h = charge[t]
        if tau is None:
            np.add(v, x_seq[t], out=h)
        else:
            np.subtract(x_seq[t], v, out=h)
            h /= tau
            h += v
        np.greater_equal(h, threshold, out=spikes[t])
        np.multiply(h, spikes[t], out=v)
        np.subtract(h, v, out=v)
    return v


class _Layer(ctypes.Structure):
    """neurons.c's Layer: T steps of M neurons; tau 0 for IF."""

    _fields_ = [("T", ctypes.c_int64), ("M", ctypes.c_int64), ("tau", ctypes.c_float), ("threshold", ctypes.c_float)]


class Surrogate(ctypes.Structure):
    """neuron_step.h's Surrogate (the C kernels' surrogate gradient): spikingjelly's id (0 Sigmoid,
    1 ATan), alpha, pi / 2 * alpha and alpha / 2, the constants rounded to float as torch rounds them."""

    _fields_ = [("id", ctypes.c_int), ("alpha", ctypes.c_float), ("scale", ctypes.c_float),
                ("half_alpha", ctypes.c_float)]

    @classmethod
    def of(cls, surrogate_id: int, alpha: float) -> "Surrogate":
        return cls(surrogate_id, alpha, math.pi / 2 * alpha, alpha / 2)


# neurons.c: the forward and backward over all steps in one call (all sizes, where a C compiler is).
# Structs cross by pointer (ctypes turns an instance into one): passed by value through ctypes,
# fire_pool.c's Surrogate (an int and three floats) arrived garbled and its gradients were wrong.
_KERNELS = native.Kernels("neurons.c", {
    "if_lif_forward": (None, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.POINTER(_Layer),
                              ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]),
    "if_lif_backward": (None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(_Layer),
                               ctypes.POINTER(Surrogate), ctypes.c_void_p, ctypes.c_int]),
})
_C_SURROGATES = (0, 1)  # the surrogates neurons.c computes: Sigmoid, ATan


def _same_layout(x_seq: torch.Tensor, dense: torch.Tensor) -> bool:
    """x_seq's steps are laid out as the dense [T, ...] tensor's, one after another or all one (stride 0)."""
    return (x_seq.dtype == torch.float32 and x_seq[0].stride() == dense[0].stride()
            and x_seq.stride(0) in (0, dense[0].numel()))


def _like(x: torch.Tensor, layout: torch.Tensor, copy: bool = False) -> torch.Tensor:
    """x with the strides of ``layout`` (same shape): x itself when it has them and no ``copy`` is asked."""
    if x.stride() == layout.stride() and not copy and x.dtype == layout.dtype:
        return x
    return torch.empty_like(layout).copy_(x)


def _dense_strides(x_seq: torch.Tensor) -> tuple[int, ...]:
    """Strides of a dense [T, ...] tensor whose steps keep the memory layout of ``x_seq[0]``.

    Keeps channels_last activations channels_last (also when x_seq is an expanded view).
    """
    step = x_seq[0]
    if step.dim() == 4 and step.is_contiguous(memory_format=torch.channels_last):
        n, c, h, w = step.shape
        inner = (h * w * c, 1, w * c, c)
    else:
        inner, size = [], 1
        for extent in reversed(step.shape):
            inner.insert(0, size)
            size *= extent
    return (step.numel(), *inner)


def _surrogate_gradient_(x: torch.Tensor, alpha: float, surrogate_id: int) -> torch.Tensor:
    """spikingjelly's ``_surrogate_gradient`` (same float ops), computed in place in ``x``."""
    if surrogate_id == 1:  # ATan: (alpha / 2) / (1 + (pi / 2 * alpha * x) ** 2)
        x.mul_(math.pi / 2 * alpha)
        return x.mul_(x).add_(1).reciprocal_().mul_(alpha / 2)
    if surrogate_id == 0:  # Sigmoid: (1 - s) * s * alpha, s = sigmoid(alpha * x)
        sig = x.mul_(alpha).sigmoid_()
        return torch.sub(1, sig).mul_(sig).mul_(alpha)
    return _surrogate_gradient(x, alpha, surrogate_id)


class _FusedIFLIF(torch.autograd.Function):
    """IF/LIF multi-step neuron with spikingjelly's hand-written backward (``_ops/lif/cpu.py``)."""

    @staticmethod
    def forward(ctx, x_seq, v_init, tau, threshold, alpha, surrogate_id):
        spikes, v, charge = _multi_step_if_lif(x_seq, v_init, tau, threshold, keep_charge=True)
        ctx.save_for_backward(charge, spikes)
        ctx.params = (tau, threshold, alpha, surrogate_id)
        ctx.set_materialize_grads(False)  # the last V rarely reaches the loss: no zero gradient for it
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        charge, spikes = ctx.saved_tensors
        tau, threshold, alpha, surrogate_id = ctx.params
        if (charge.device.type == "cpu" and surrogate_id in _C_SURROGATES and grad_spikes is not None
                and (lib := _KERNELS.get()) is not None):
            grad_spikes = _like(grad_spikes, charge)
            carry = torch.zeros_like(charge[0]) if grad_v is None else _like(grad_v, charge[0], copy=True)
            grad_x = torch.empty_like(charge)
            layer = _Layer(len(charge), charge[0].numel(), 0.0 if tau is None else tau, threshold)
            lib.if_lif_backward(grad_spikes.data_ptr(), charge.data_ptr(), carry.data_ptr(), layer,
                                Surrogate.of(surrogate_id, alpha), grad_x.data_ptr(), torch.get_num_threads())
            return grad_x, carry if ctx.needs_input_grad[1] else None, None, None, None, None
        sg = _surrogate_gradient_(charge - threshold, alpha, surrogate_id)  # dS/dH, [T, ...]
        # dV/dH of the hard reset to 0: (1 - S) + (0 - H) * dS/dH
        reset_grad = torch.sub(1.0, spikes).addcmul_(charge, sg, value=-1.0)
        grad_h = sg.zero_() if grad_spikes is None else sg.mul_(grad_spikes)
        if grad_h[0].numel() <= _NUMPY_MAX_STEP_NUMEL and grad_h.is_contiguous():
            carry = torch.from_numpy(_backward_steps_numpy(
                grad_h.numpy(), reset_grad.numpy(), None if grad_v is None else grad_v.numpy(), tau))
        else:
            carry = _backward_steps_torch(grad_h, reset_grad, grad_v, tau)
        grad_v_init = carry.clone() if ctx.needs_input_grad[1] else None
        grad_x = grad_h if tau is None else grad_h.div_(tau)
        return grad_x, grad_v_init, None, None, None, None


def _backward_steps_torch(grad_h, reset_grad, grad_v, tau):
    """Add each step's dL/dV to dL/dH [T, ...] (in place), last step first; returns dL/dV of the initial V."""
    carry = grad_v
    for t in range(grad_h.shape[0] - 1, -1, -1):
        if carry is not None:
            grad_h[t].addcmul_(carry, reset_grad[t])
        carry = grad_h[t] if tau is None else grad_h[t] - grad_h[t] / tau
    return carry


def _backward_steps_numpy(grad_h, reset_grad, grad_v, tau):
    """``_backward_steps_torch`` on numpy views of the same memory (same ops; the carry in one reused buffer)."""
    carry, scratch, kept = grad_v, np.empty_like(grad_h[0]), np.empty_like(grad_h[0])
    for t in range(grad_h.shape[0] - 1, -1, -1):
        if carry is not None:
            grad_h[t] += np.multiply(carry, reset_grad[t], out=scratch)  # the old carry is used up here
        if tau is None:
            carry = grad_h[t]
        else:  # grad_h[t] - grad_h[t] / tau
            carry = np.divide(grad_h[t], tau, out=kept)
            np.subtract(grad_h[t], carry, out=carry)
    return carry


class _FusedMultiStep:
    """Mixin: run spikingjelly's IF/LIF multi-step forward through the fused CPU kernels.

    Spike counters (``register_spike_counter``) are told each forward's spike count, also when
    ``fire_and_pool`` fuses the layer with its pool and its spikes never exist as a tensor.
    """

    fused = True  # set False (backend "torch") to keep spikingjelly's own path

    def register_spike_counter(self, counter) -> RemovableHandle:
        """Call ``counter(count, neuron_steps, steps)`` after every forward: the spikes fired (a float64
        scalar tensor), the neuron-steps they were fired over and the time steps of the call. Returns a
        handle whose ``remove()`` stops it."""
        counters = self.__dict__.setdefault("_spike_counters", OrderedDict())  # weakly referenced by the handle
        handle = RemovableHandle(counters)
        counters[handle.id] = counter
        return handle

    def tell_spike_counters(self, count: torch.Tensor, neuron_steps: int, steps: int) -> None:
        for counter in list(self.__dict__.get("_spike_counters", {}).values()):
            counter(count, neuron_steps, steps)

    def forward(self, *args, **kwargs):
        spikes = super().forward(*args, **kwargs)
        if self.__dict__.get("_spike_counters"):
            self.tell_spike_counters(count_spikes(spikes), spikes.numel(), spikes.shape[0] if self.step_mode == "m" else 1)
        return spikes

    def _fused_tau(self) -> float | None:
        return None

    def _fused_profile(self, x_seq: torch.Tensor) -> tuple[int, float] | None:
        """(surrogate id, alpha) when the fused kernels compute exactly this neuron, else None."""
        if not (self.fused and _surrogate_spec is not None and x_seq.device.type == "cpu"
                and x_seq.dtype == torch.float32 and x_seq.dim() >= 2 and x_seq.shape[0] >= 1):
            return None
        if (self.v_reset != 0.0 or self.detach_reset or self.store_v_seq
                or self._neuron_precision is not None or not getattr(self, "decay_input", True)):
            return None
        return _surrogate_spec(self.surrogate_function)

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        if self.fused and x_seq.dtype in (torch.float16, torch.bfloat16):
            # autocast hands the neuron half-precision currents: keep its state and dynamics in
            # float32 (spikingjelly's fast kernels need a float32 state); spikes are exact anyway
            x_seq = x_seq.float()
        profile = self._fused_profile(x_seq) if not args and not kwargs else None
        if profile is None:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        v = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")[0]
        if v.dtype != torch.float32:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        surrogate_id, alpha = profile
        threshold = float(self.v_threshold)
        if torch.is_grad_enabled() and (x_seq.requires_grad or v.requires_grad):
            spikes, v = _FusedIFLIF.apply(x_seq, v, self._fused_tau(), threshold, alpha, surrogate_id)
        else:
            spikes, v, _ = _multi_step_if_lif(x_seq, v, self._fused_tau(), threshold, keep_charge=False)
        self._memories["v"] = v
        return spikes


class FusedIFNode(_FusedMultiStep, neuron.IFNode):
    """spikingjelly's IFNode; multi-step on the CPU runs the fused kernels."""


class FusedLIFNode(_FusedMultiStep, neuron.LIFNode):
    """spikingjelly's LIFNode; multi-step on the CPU runs the fused kernels."""

    def _fused_tau(self) -> float | None:
        return float(self.tau)
