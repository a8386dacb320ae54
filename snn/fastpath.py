"""Faster ways to compute exactly what the seed's networks compute, and the neuron backend choice.

Two things make an SNN epoch slow on a CPU, and both are rewritten here without changing
the model:

* spikingjelly 2.0's multi-step IF/LIF neurons run on the CPU as its Torch reference: about
  ten autograd-recorded tensor ops per time step, each a full pass over ``[N, ...]``.
  ``FusedIFNode`` / ``FusedLIFNode`` are spikingjelly's own ``IFNode`` / ``LIFNode`` with a
  multi-step forward of three to five in-place ops per step and a hand-written backward
  (the one of spikingjelly's ``_ops/*/cpu.py``, with the surrogate gradient evaluated once for
  all steps). The spikes are bit-identical to spikingjelly's; gradients agree to float
  rounding (tests/snn/test_fast_paths.py). Anything outside the fused profile (CUDA, other
  dtypes, soft reset, ``detach_reset``, custom surrogates) runs spikingjelly's own path.
* The FC-SNN's Poisson input draws T x N x 784 uniform numbers per batch, and most MNIST
  pixels are 0 (never spike). ``poisson_input_current`` draws random numbers only for
  the fractional pixels, four 16-bit uniforms per 64-bit generator call, and feeds only
  their spikes through the linear layer; every pixel still spikes at every step,
  independently, with probability equal to its intensity (to 2^-16).

``backend`` (a config field) picks the neuron implementation: ``auto`` (the fused CPU
neurons on a CPU, spikingjelly's fastest CUDA kernels on a GPU), ``torch`` (spikingjelly's
Torch reference everywhere, and the dense Poisson encoder: the seed's computation, op for
op), or ``triton`` / ``cuda`` (force that spikingjelly CUDA provider; a GPU is required).
"""

from __future__ import annotations

import importlib
import math
import os
import warnings

import numpy as np
import torch
from spikingjelly.activation_based import layer, neuron

try:  # spikingjelly 2.x internals: the surrogate ids and gradients its own kernels use
    from spikingjelly._ops.surrogate import _surrogate_gradient, _surrogate_spec
except ImportError:  # another spikingjelly layout: every neuron takes spikingjelly's own path
    _surrogate_gradient = _surrogate_spec = None

BACKENDS = ("auto", "torch", "triton", "cuda")
CUDA_ONLY_BACKENDS = ("triton", "cuda")
# spikingjelly's per-neuron CUDA provider switches (read once at import, so also set below)
_SJ_OPS = {"if": ("if_", "SJ_IF_CUDA_IMPLEMENTATION"), "lif": ("lif", "SJ_LIF_CUDA_IMPLEMENTATION"),
           "plif": ("plif", "SJ_PLIF_CUDA_IMPLEMENTATION")}


# ----------------------------------------------------------------------------- neurons


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
    if x_seq[0].numel() >= COMPILE_MIN_STEP_NUMEL and x_seq.device.type == "cpu":
        compiled = _compiled_loop(x_seq.detach(), v.detach(), tau, threshold, keep_charge)
        if compiled is not None:
            return compiled
    spikes = torch.empty_strided(x_seq.shape, _dense_strides(x_seq), dtype=x_seq.dtype, device=x_seq.device)
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


# From this many neurons per step (the CSNN's conv layers: 128 x 64 x 28 x 28 and x 14 x 14), the
# time loop is memory-bound: three full passes per step in torch ops. torch.compile (inductor's C++
# code) fuses a whole loop into one pass that reads each input once, ~1.35x faster per training and
# evaluation batch of the CSNN; the first call compiles for 15-60 s (cached on disk for later runs).
# Smaller steps would not repay the compile.
COMPILE_MIN_STEP_NUMEL = 1 << 20


class _Compiled:
    """``fn`` compiled by inductor on its first call, run without autograd.

    Calling returns None where torch.compile or a C++ compiler is missing (with one warning; it
    is not tried again): the caller then runs its eager code, which computes the same.
    ``compiled`` is None before the first call, False once compiling failed.
    """

    def __init__(self, fn, what: str):
        self.fn, self.what, self.compiled = fn, what, None

    def __call__(self, *args):
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, dynamic=True)
        if self.compiled is False:
            return None
        try:
            with torch.no_grad():
                return self.compiled(*args)
        except Exception as error:  # no compiler, an unsupported platform
            warnings.warn(f"torch.compile of {self.what} failed, running it eagerly: {error}", stacklevel=3)
            self.compiled = False
            return None


def if_lif_steps(x_seq: torch.Tensor, v: torch.Tensor, tau: float | None, threshold: float,
                 keep_charge: bool):
    """The loop of ``_multi_step_if_lif`` as pure tensor functions, the form torch.compile fuses.

    Same float ops as the eager loops (spikes bit-identical, tests/snn/test_fast_paths.py).
    Returns spikes [T, ...], the last V [...] and, when ``keep_charge``, H [T, ...] (else None).
    """
    spikes, charges = [], []
    for t in range(x_seq.shape[0]):
        h = v + x_seq[t] if tau is None else v + (x_seq[t] - v) / tau
        s = (h >= threshold).to(h.dtype)
        v = h - h * s
        spikes.append(s)
        charges.append(h)
    return torch.stack(spikes), v, torch.stack(charges) if keep_charge else None


_compiled_loop = _Compiled(if_lif_steps, "the IF/LIF loop")


# the surrogates whose gradient ``if_lif_backward`` writes out (spikingjelly's ids: 0 Sigmoid, 1 ATan)
_COMPILED_SURROGATES = (0, 1)


def if_lif_backward(grad_spikes: torch.Tensor, charge: torch.Tensor, grad_v: torch.Tensor | None,
                    tau: float | None, threshold: float, alpha: float, surrogate_id: int):
    """The backward of ``if_lif_steps`` as pure tensor functions, the form torch.compile fuses.

    The same arithmetic as ``_FusedIFLIF.backward``'s eager steps (spikingjelly's
    ``_ops/lif/cpu.py``), one step at a time from the last: dS/dH is the surrogate gradient at
    H - threshold, the hard reset's dV/dH is (1 - S) - H * dS/dH with S = (H >= threshold)
    recomputed from the charge, dL/dH = dL/dS * dS/dH + dL/dV * dV/dH, and dL/dX is dL/dH
    (IF) or dL/dH / tau (LIF). Returns dL/dX [T, ...] and dL/dV of the initial V.
    """
    carry, grads = grad_v, []
    for t in range(charge.shape[0] - 1, -1, -1):
        h = charge[t]
        if surrogate_id == 1:  # ATan: (alpha / 2) / (1 + (pi / 2 * alpha * x) ** 2)
            x = (h - threshold) * (math.pi / 2 * alpha)
            sg = 1.0 / (x * x + 1.0) * (alpha / 2)
        else:  # Sigmoid: (1 - s) * s * alpha, s = sigmoid(alpha * x)
            sig = torch.sigmoid((h - threshold) * alpha)
            sg = (1.0 - sig) * sig * alpha
        grad_h = grad_spikes[t] * sg
        if carry is not None:
            reset_grad = (1.0 - (h >= threshold).to(h.dtype)) - h * sg
            grad_h = grad_h + carry * reset_grad
        carry = grad_h if tau is None else grad_h - grad_h / tau
        grads.append(grad_h if tau is None else grad_h / tau)
    return torch.stack(grads[::-1]), carry


_compiled_backward = _Compiled(if_lif_backward, "the IF/LIF backward")


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
        if (charge[0].numel() >= COMPILE_MIN_STEP_NUMEL and charge.device.type == "cpu"
                and grad_spikes is not None and surrogate_id in _COMPILED_SURROGATES):
            compiled = _compiled_backward(grad_spikes, charge, grad_v, tau, threshold, alpha, surrogate_id)
            if compiled is not None:
                grad_x, grad_v_init = compiled
                return grad_x, grad_v_init if ctx.needs_input_grad[1] else None, None, None, None, None
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
    """``_backward_steps_torch`` on numpy views of the same memory."""
    carry, scratch = grad_v, np.empty_like(grad_h[0])
    for t in range(grad_h.shape[0] - 1, -1, -1):
        if carry is not None:
            grad_h[t] += np.multiply(carry, reset_grad[t], out=scratch)
        carry = grad_h[t] if tau is None else grad_h[t] - grad_h[t] / tau
    return carry


class _FusedMultiStep:
    """Mixin: run spikingjelly's IF/LIF multi-step forward through the fused CPU kernels."""

    fused = True  # set False (backend "torch") to keep spikingjelly's own path

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


def set_fused(model: torch.nn.Module, enabled: bool) -> None:
    """Switch every fused neuron and fast max-pool of ``model`` between its fast path and spikingjelly's own."""
    for m in model.modules():
        if isinstance(m, (_FusedMultiStep, FastMaxPool2d)):
            m.fused = enabled


# ----------------------------------------------------------------------------- max-pooling


def max_pool_2x2(x: torch.Tensor, with_indices: bool = False):
    """2x2 max-pooling of stride 2 over the last two dims of x [..., H, W] (odd edges dropped,
    as ``max_pool2d``'s floor mode does): the maximum of the window's four strided views.

    The same values as ``max_pool2d`` (a maximum is exact; NaN propagates in both), in the
    memory layout of x. ``with_indices``: also aten's argmax indices, the first maximum of each
    window in row-major order as a flat index into the H x W plane (a window holding NaN, which
    spikes never are, may point elsewhere than aten's).
    """
    height, width = x.shape[-2:]
    h, w = height // 2 * 2, width // 2 * 2
    a, b = x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2]
    c, d = x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]
    out = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
    if not with_indices:
        return out
    offset = torch.where(a == out, 0, torch.where(b == out, 1, torch.where(c == out, width, width + 1)))
    corner = (torch.arange(h // 2, device=x.device).view(-1, 1) * (2 * width)
              + torch.arange(w // 2, device=x.device) * 2)  # each window's top-left pixel
    return out, offset + corner


_compiled_pool = _Compiled(max_pool_2x2, "the max-pool")


def _fast_max_pool_2x2(x: torch.Tensor, with_indices: bool = False):
    """``max_pool_2x2``, compiled by inductor into one pass for large inputs where it can be.

    Large: the whole input (all steps at once) holds at least ``COMPILE_MIN_STEP_NUMEL`` elements.
    """
    if x.numel() >= COMPILE_MIN_STEP_NUMEL:
        pooled = _compiled_pool(x, with_indices)
        if pooled is not None:
            return pooled
    return max_pool_2x2(x, with_indices)


class _MaxPool2x2(torch.autograd.Function):
    """2x2/2 max-pooling of [..., C, H, W]: ``max_pool_2x2``'s forward, aten's backward over its indices."""

    @staticmethod
    def forward(ctx, x):
        planes = x.flatten(0, -4) if x.dim() > 4 else x  # aten's backward takes [N, C, H, W]
        out, indices = _fast_max_pool_2x2(planes, with_indices=True)
        ctx.save_for_backward(planes, indices)
        ctx.shape = x.shape
        return out.view(*x.shape[:-2], *out.shape[-2:])

    @staticmethod
    def backward(ctx, grad):
        planes, indices = ctx.saved_tensors
        grad_planes = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.reshape(indices.shape), planes, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)
        return grad_planes.view(ctx.shape)


class FastMaxPool2d(layer.MaxPool2d):
    """spikingjelly's MaxPool2d; a 2x2 window of stride 2 on the CPU runs ``max_pool_2x2``.

    aten's CPU max-pool is slow at this window: the four views' maximum (compiled into one pass
    for large inputs) was ~7x faster without the argmax indices (inference, on the CSNN's
    [512, 64, 28, 28] channels_last spikes, one thread) and ~1.3x with them (training, NCHW),
    whose backward stays aten's. Same values, same gradients (tests/snn/test_fast_paths.py).
    """

    fused = True  # set False (backend "torch") to keep spikingjelly's own path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape_ok = x.dim() == 5 if self.step_mode == "m" else x.dim() in (3, 4)  # else spikingjelly says why not
        if not (self.fused and shape_ok and x.device.type == "cpu" and _pair(self.kernel_size) == (2, 2)
                and _pair(self.stride or self.kernel_size) == (2, 2) and _pair(self.padding) == (0, 0)
                and _pair(self.dilation) == (1, 1) and not self.return_indices and not self.ceil_mode):
            return super().forward(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxPool2x2.apply(x) if x.dim() >= 4 else super().forward(x)  # aten's backward takes 4-D
        return _fast_max_pool_2x2(x)


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


# ----------------------------------------------------------------------------- Poisson input


# Each 64-bit draw of torch's generator is split into four 16-bit uniform lanes: on the CPU one
# int64 draw costs about as much as one float uniform, so a spike costs a quarter of a draw.
LANE_BITS = 16
_LANE_LEVELS = 1 << LANE_BITS  # a lane u is uniform on {0, ..., 65535}
_LANES_PER_DRAW = 64 // LANE_BITS


def spike_thresholds(probs: torch.Tensor) -> torch.Tensor:
    """Spike probabilities [...] in [0, 1] as the int16 thresholds ``bernoulli_spikes`` compares lanes to.

    A lane u (uniform on 0..65535) spikes when u < round(p * 65536), so a pixel spikes with
    probability round(p * 65536) / 65536: at most 2^-17 from p (2^-16 for p within 2^-17 of 1,
    where the threshold is capped at 65535 to fit int16; p = 1 pixels never come here in
    ``poisson_input_current``). For MNIST's levels p = k/255 the error is k/255/65536 for
    k <= 127 and (1 - k/255)/65536 above: at most 127/255/65536 = 7.6e-6. p = 0 never spikes.
    ``p * 65536`` and its rounding are exact in float32. The int16 lane is u - 32768 (a
    relabelling of a uniform lane is still uniform), hence the shift of the threshold.
    """
    levels = (probs.float() * _LANE_LEVELS).round_().clamp_(max=_LANE_LEVELS - 1)
    return levels.sub_(_LANE_LEVELS // 2).to(torch.int16)


def uniform_lanes(shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    """int16 tensor of ``shape``, every element an independent uniform 16-bit lane.

    Drawn as full-range int64 numbers (``random_(-2**63, None)``, one 64-bit generator call
    each) viewed as four int16 lanes, so torch.manual_seed makes it reproducible.
    """
    numel = math.prod(shape)
    draws = -(-numel // _LANES_PER_DRAW)
    words = torch.empty(draws, dtype=torch.int64, device=device).random_(-2**63, None)
    return words.view(torch.int16)[:numel].view(shape)


def bernoulli_spikes(thresholds: torch.Tensor, T: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """T independent Bernoulli spikes per element: thresholds [...] (``spike_thresholds``) -> [..., T] 0/1."""
    lanes = uniform_lanes((*thresholds.shape, T), thresholds.device)  # [..., T]
    spikes = torch.empty(lanes.shape, dtype=dtype, device=lanes.device)
    # comparing straight into a float tensor is ~4x faster on the CPU than a bool result converted
    return torch.lt(lanes, thresholds.unsqueeze(-1), out=spikes)


# The batch's images are split into groups of similar fractional-pixel counts, each group padded
# to its own largest count: on MNIST batches of 128, one group pads the draws to 1.79x the pixels that
# can spike, six groups to 1.13x. The draw, comparison and matmul shrink with the padding: the
# input current's forward and backward ran 1.35-1.49x faster than with one group.
INPUT_GROUPS = 6


def poisson_input_current(images: torch.Tensor, weight: torch.Tensor, T: int) -> torch.Tensor:
    """``Linear(poisson_encode(images, T))`` drawing random numbers only for pixels that can vary.

    images: [N, P] intensities in [0, 1]; weight: [O, P]  ->  input current [T, N, O].

    A pixel spikes at a step with probability equal to its intensity, as in ``poisson_encode``:
    intensity 0 never spikes and intensity 1 always does. So the always-on pixels add a
    constant current, and random numbers are drawn only for the fractional pixels of each
    image (about 145 of 784 on MNIST). The images are split into ``INPUT_GROUPS`` groups by
    their count of fractional pixels; within a group each image's count is padded to the
    group's largest with probability 0, and the group's spikes [n, K, T] go through the weight
    by one batched matmul. The draws are 16-bit lanes (``bernoulli_spikes``): each spike
    probability is within 7.6e-6 of the intensity for MNIST's k/255 levels (2^-16 at worst);
    only the summation order of the current differs otherwise.
    """
    n, p = images.shape
    always = images >= 1.0  # [N, P]
    fractional = (images > 0.0) & ~always  # [N, P]
    constant = (always.to(weight.dtype) @ weight.t()).unsqueeze(2)  # [N, O, 1]
    counts = fractional.sum(1)
    if n == 0 or int(counts.max()) == 0:
        return constant.squeeze(2).expand(T, n, weight.shape[0])
    by_count = torch.argsort(counts, stable=True)  # images of similar counts side by side
    counts = counts[by_count]
    # every fractional pixel of the sorted batch, row-major: image after image, each in pixel order
    rows, pixels = fractional[by_count].nonzero(as_tuple=True)
    thresholds = spike_thresholds(images[by_count][rows, pixels])  # [M] int16
    ends = counts.cumsum(0)
    slots = torch.arange(len(rows), device=rows.device) - (ends - counts)[rows]  # place within its image
    ends, counts = [0, *ends.tolist()], counts.tolist()
    # rows of a contiguous [P, O] copy gather ~10x faster than the strided columns of weight
    pixel_major = weight.t().contiguous()
    parts, size = [], -(-n // INPUT_GROUPS)  # images per group, as torch.chunk splits
    for first in range(0, n, size):
        last = min(first + size, n)
        part = slice(ends[first], ends[last])  # the group's pixels in rows, slots, pixels, thresholds
        parts.append(_group_current(rows[part] - first, slots[part], pixels[part], thresholds[part],
                                    last - first, counts[last - 1], pixel_major, T))
    current = torch.cat(parts).index_select(0, torch.argsort(by_count))  # [N, O, T], the batch's order
    return (current + constant).permute(2, 0, 1)  # [T, N, O]


def _group_current(rows: torch.Tensor, slots: torch.Tensor, pixels: torch.Tensor, thresholds: torch.Tensor,
                   n: int, k: int, pixel_major: torch.Tensor, T: int) -> torch.Tensor:
    """Input current [n, O, T] of n images' fractional pixels (image ``rows``, place ``slots`` < k,
    ``pixels``, spike ``thresholds``); ``pixel_major`` is the weight as [P, O]."""
    if k == 0:
        return pixel_major.new_zeros(n, pixel_major.shape[1], T)
    # slot j of image i holds its j-th fractional pixel; the padding after them holds pixel 0 with a
    # threshold no lane is below (never spikes, so it adds nothing to the current or the gradient)
    order = torch.zeros(n, k, dtype=torch.long, device=pixels.device)  # [n, K]
    order[rows, slots] = pixels
    padded = torch.full((n, k), -_LANE_LEVELS // 2, dtype=torch.int16, device=pixels.device)
    padded[rows, slots] = thresholds
    spikes = bernoulli_spikes(padded, T, pixel_major.dtype)  # [n, K, T]
    # index_select's backward is an index_add_, several times faster on the CPU than the
    # accumulating index_put_ that advanced indexing (weight[:, order]) backpropagates through
    pixel_weights = pixel_major.index_select(0, order.reshape(-1)).view(n, k, -1)  # [n, K, O]
    return torch.bmm(pixel_weights.transpose(1, 2), spikes)  # [n, O, K] @ [n, K, T] -> [n, O, T]


# ----------------------------------------------------------------------------- CUDA backends


def select_cuda_backend(backend: str) -> None:
    """Point spikingjelly's CUDA neuron dispatch at ``backend`` (auto, torch, triton or cuda).

    spikingjelly reads ``SJ_<NEURON>_CUDA_IMPLEMENTATION`` once, at import; this sets the
    variables (for worker processes) and the already-imported selections, and drops their
    cached choice so the next CUDA call selects again. No effect on CPU tensors.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    for package, variable in _SJ_OPS.values():
        os.environ[variable] = backend
        try:
            selection = importlib.import_module(f"spikingjelly._ops.{package}")._selection
        except (ImportError, AttributeError):
            continue
        if selection._requested != backend:
            selection._requested = backend
            selection._selections.clear()
            selection._compiled_selections.clear()


def neuron_implementation(kind: str, device: torch.device | str, backend: str = "auto") -> str:
    """Name of the implementation a ``kind`` neuron runs on ``device`` under ``backend``."""
    device = torch.device(device)
    if device.type == "cpu":
        if backend == "torch" or kind == "plif" or _surrogate_spec is None:
            return "spikingjelly-torch-reference"
        return "snn-fused-cpu"
    from spikingjelly.activation_based.functional import neuron_implementation as sj_implementation

    return "spikingjelly-" + str(sj_implementation(kind, device)["implementation"])
