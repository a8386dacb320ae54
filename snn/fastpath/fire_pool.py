"""A fused IF/LIF neuron layer and the 2x2 max-pool after it: ``pool(neuron(x))`` in one pass.

The CSNN's first block fires 4 x 128 x 64 x 28 x 28 neurons a batch and pools them at once.
Unfused, the neuron writes its spikes (and, training, its charges) in full, the pool reads
them back and writes its indices, and the backward reads and writes each of those again: the
block was about 40% of a batch. ``fire_pool.c`` runs two rows of neurons at a time through
all T steps in a buffer that stays in the CPU's cache and writes only the pooled spikes; the
backward recomputes the charges from the currents. The CSNN's first current is the same at every step (``steps``),
so it is read once, and its gradient comes back summed over the steps.

Same spikes, same last V, same gradients, bit for bit, as ``FusedIFNode`` / ``FusedLIFNode``
followed by aten's max-pool (tests/snn/test_fire_pool.py; against spikingjelly's own neurons and
aten's max-pool, ties included, in the known-answer check where the kernel is built). Only for what
the kernel computes: a fused neuron (hard reset to 0, ATan or Sigmoid surrogate) fresh from a reset,
a 2x2 stride-2 max-pool, float32 currents on the CPU with even H and W, NCHW or channels_last steps,
and no hooks on either module; anything else, and everything where the kernel is not available,
runs the reference ``pool(neuron(x))``. Spike counting (``snn.spikes.record_activity``) gets the
neuron's count from the kernel.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate
from torch import nn

from . import internals, native
from .neurons import Surrogate, _FusedMultiStep, surrogate_spec
from .pooling import FastMaxPool2d

_SURROGATES = (0, 1)  # the kernels' surrogate ids: Sigmoid, ATan


class _Layout(ctypes.Structure):
    """fire_pool.c's Layout: a step as [G, H, W, B] (NCHW: G = N*C, B = 1; channels_last: G = N, B = C)."""

    _fields_ = [("G", ctypes.c_int64), ("H", ctypes.c_int64), ("W", ctypes.c_int64), ("B", ctypes.c_int64)]


class _Neuron(ctypes.Structure):
    """fire_pool.c's Neuron: steps, tau (0 for IF) and threshold."""

    _fields_ = [("T", ctypes.c_int64), ("tau", ctypes.c_float), ("threshold", ctypes.c_float)]


def fire_and_pool(neuron: nn.Module, pool: nn.Module, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """``pool(neuron(x_seq))`` for multi-step modules, fused where the kernel computes exactly that.

    x: currents [T, N, C, H, W]; or, with ``steps``, one current [N, C, H, W] presented at every
    one of ``steps`` steps (x_seq is then x expanded over them). Returns the pooled spikes
    [T, N, C, H/2, W/2] and leaves the neuron's V at its last step, as ``pool(neuron(x_seq))`` does.
    """
    spec = _fusable(neuron, pool, x, steps)
    lib = _KERNELS.get() if spec is not None else None
    if lib is not None:
        try:
            if torch.is_grad_enabled() and x.requires_grad:
                pooled, v_last, count = _FirePool.apply(x, spec, lib)
            else:
                pooled, v_last, count = _forward(lib, x, spec)
        except native.OutOfMemory:
            _KERNELS.refuse("could not allocate its scratch memory")
        else:
            neuron.v = v_last
            neuron.tell_spike_counters(count, spec.steps * spec.neurons_per_step, spec.steps)
            return pooled
    x_seq = x if steps is None else x.unsqueeze(0).expand(steps, *x.shape)
    return pool(neuron(x_seq))


class _Spec:
    """What one fused call computes: the steps, their layout and the neuron's parameters."""

    def __init__(
        self,
        x: torch.Tensor,
        steps: int,
        broadcast: bool,
        channels_last: bool,
        tau: float | None,
        threshold: float,
        surrogate_function,
    ):
        n, c, h, w = x.shape[-4:]
        self.steps, self.channels_last = steps, channels_last
        self.shape = (n, c, h, w)
        self.neurons_per_step = n * c * h * w
        self.layout = _Layout(n, h, w, c) if channels_last else _Layout(n * c, h, w, 1)
        self.step_stride = 0 if broadcast else self.neurons_per_step
        self.tau, self.threshold, self.surrogate_function = tau, threshold, surrogate_function
        self.neuron = _Neuron(steps, 0.0 if tau is None else tau, threshold)
        self.surrogate = Surrogate.of(*surrogate_spec(surrogate_function))

    def empty_steps(self, steps: int, height: int, width: int) -> torch.Tensor:
        """An uninitialised [steps, N, C, height, width] float tensor in this call's step layout."""
        n, c = self.shape[:2]
        if self.channels_last:
            strides = (n * height * width * c, height * width * c, 1, width * c, c)
        else:
            strides = (n * c * height * width, c * height * width, height * width, width, 1)
        return torch.empty_strided((steps, n, c, height, width), strides)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, N, C, H, W] copied, where needed, into this call's step layout."""
        like = self.empty_steps(x.shape[0], *x.shape[-2:])
        return x if x.stride() == like.stride() else like.copy_(x)

    def reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference path on x, with autograd: (pooled spikes, last V) of spikingjelly's own neuron and aten's max-pool."""
        if self.tau is None:
            node = sj_neuron.IFNode(
                v_threshold=self.threshold, surrogate_function=self.surrogate_function, step_mode="m"
            )
        else:
            node = sj_neuron.LIFNode(
                tau=self.tau, v_threshold=self.threshold, surrogate_function=self.surrogate_function, step_mode="m"
            )
        x_seq = x.unsqueeze(0).expand(self.steps, *x.shape) if self.step_stride == 0 else x
        spikes = node(x_seq)
        return F.max_pool2d(spikes.flatten(0, 1), 2).unflatten(0, spikes.shape[:2]), node.v


def _fusable(neuron: nn.Module, pool: nn.Module, x: torch.Tensor, steps: int | None) -> _Spec | None:
    """The call's _Spec when the kernel computes exactly ``pool(neuron(x_seq))``, else None."""
    if not (
        isinstance(neuron, _FusedMultiStep)
        and isinstance(pool, FastMaxPool2d)
        and pool.fused
        and pool.is_2x2()
        and neuron.step_mode == "m"
        and pool.step_mode == "m"
    ):
        return None
    if neuron._forward_hooks or neuron._forward_pre_hooks or pool._forward_hooks or pool._forward_pre_hooks:
        return None  # a hook must see the spikes themselves
    if internals.global_module_hooks():
        return None
    v = neuron.v
    if not (isinstance(v, (int, float)) and v == 0.0):  # only from a reset state, V = 0
        return None
    if x.dim() != (4 if steps is not None else 5) or x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    T = steps if steps is not None else x.shape[0]
    n, c, h, w = x.shape[-4:]
    if not (T >= 1 and h % 2 == 0 and w % 2 == 0 and x.numel() > 0):
        return None
    step = x if steps is not None else x[0]
    channels_last = step.is_contiguous(memory_format=torch.channels_last) and not step.is_contiguous()
    if not (step.is_contiguous() or channels_last):
        return None
    if steps is None and x.stride(0) != step.numel():
        return None
    profile = neuron._fused_profile(x if steps is None else x.unsqueeze(0))
    if profile is None or profile[0] not in _SURROGATES:
        return None
    return _Spec(
        x,
        T,
        steps is not None,
        channels_last,
        neuron._fused_tau(),
        float(neuron.v_threshold),
        neuron.surrogate_function,
    )


def _forward(lib, x: torch.Tensor, spec: _Spec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pooled spikes, last V, the neuron's spike count as a float64 scalar) of the fused forward."""
    n, c, h, w = spec.shape
    pooled = spec.empty_steps(spec.steps, h // 2, w // 2)
    v_last = spec.empty_steps(1, h, w)[0]
    count = lib.fire_pool_forward(
        x.data_ptr(),
        spec.step_stride,
        spec.layout,
        spec.neuron,
        pooled.data_ptr(),
        v_last.data_ptr(),
        torch.get_num_threads(),
    )
    if count < 0:
        raise native.OutOfMemory("fire_pool.c")
    return pooled, v_last, torch.tensor(float(count), dtype=torch.float64)


class _FirePool(torch.autograd.Function):
    """The fused forward; its backward recomputes the charges from the saved currents."""

    @staticmethod
    def forward(ctx, x, spec, lib):
        x = x.detach()
        pooled, v_last, count = _forward(lib, x, spec)
        ctx.save_for_backward(x)
        ctx.spec, ctx.lib = spec, lib
        ctx.mark_non_differentiable(v_last, count)
        return pooled, v_last, count

    @staticmethod
    def backward(ctx, grad_pooled, _grad_v, _grad_count):
        (x,) = ctx.saved_tensors
        spec = ctx.spec
        grad_pooled = spec.dense(grad_pooled)  # never None: autograd materialises unused outputs' zeros
        grad_x = torch.empty_like(x, memory_format=torch.preserve_format)
        status = ctx.lib.fire_pool_backward(
            x.data_ptr(),
            spec.step_stride,
            spec.layout,
            spec.neuron,
            grad_pooled.data_ptr(),
            grad_x.data_ptr(),
            spec.surrogate,
            torch.get_num_threads(),
        )
        if status < 0:  # out of memory: this gradient from the reference path, and the reference from now on
            _KERNELS.refuse("could not allocate its scratch memory")
            with torch.enable_grad():
                x_ref = x.detach().requires_grad_()
                (grad_x,) = torch.autograd.grad(spec.reference(x_ref)[0], x_ref, grad_pooled)
        return grad_x, None, None


def _known_answer(lib) -> str | None:
    """fire_pool.c against spikingjelly's own neurons and aten's max-pool: None, or the first difference found."""
    generator = torch.Generator().manual_seed(0)  # never torch's global generator
    # IF and LIF, both surrogates, NCHW and channels_last, one current over the steps and one per step;
    # 6x10 at 80 channels: blocks of one row pair; 12x12: several row pairs a block
    cases = [
        ("IF, ATan, NCHW, the current repeated", None, surrogate.ATan(), False, (3, 5, 12, 12), 4),
        ("LIF, Sigmoid, channels_last, per step", 2.5, surrogate.Sigmoid(), True, (3, 2, 80, 6, 10), None),
        ("LIF, ATan, NCHW, per step", 2.0, surrogate.ATan(alpha=3.0), False, (4, 2, 3, 12, 12), None),
        ("IF, Sigmoid, channels_last, the current repeated", None, surrogate.Sigmoid(), True, (2, 8, 6, 10), 3),
    ]
    for name, tau, function, channels_last, shape, steps in cases:
        x = torch.randn(shape, generator=generator) * 1.5 + 0.4
        x[..., :4, :4] = 1.2  # whole windows of equal currents: all four neurons spike at once, a tie
        if channels_last:
            step = x if steps is not None else x.flatten(0, 1)
            x = step.contiguous(memory_format=torch.channels_last).view(shape)
        T = steps or shape[0]
        spec = _Spec(x, T, steps is not None, channels_last, tau, 1.0, function)
        n, c, h, w = shape[-4:]
        upstream = torch.randn(T, n, c, h // 2, w // 2, generator=generator)
        x_ref = x.clone().requires_grad_()
        ref_pooled, ref_v = spec.reference(x_ref)
        (ref_grad,) = torch.autograd.grad(ref_pooled, x_ref, upstream)
        x_fast = x.clone().requires_grad_()
        pooled, v_last, _ = _FirePool.apply(x_fast, spec, lib)
        (grad,) = torch.autograd.grad(pooled, x_fast, upstream)
        error = (
            native.mismatch("pooled spikes", pooled, ref_pooled, exact=True)
            or native.mismatch("last voltages", v_last, ref_v, exact=True)
            or native.mismatch("input gradients", grad, ref_grad)
        )
        if error:
            return f"{name} {list(shape)}: {error}"
    return None


_KERNELS = native.Kernels(
    "fire_pool.c",
    {
        "fire_pool_forward": (
            ctypes.c_int64,
            [
                ctypes.c_void_p,
                ctypes.c_int64,
                ctypes.POINTER(_Layout),
                ctypes.POINTER(_Neuron),
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int,
            ],
        ),
        "fire_pool_backward": (
            ctypes.c_int,
            [
                ctypes.c_void_p,
                ctypes.c_int64,
                ctypes.POINTER(_Layout),
                ctypes.POINTER(_Neuron),
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.POINTER(Surrogate),
                ctypes.c_int,
            ],
        ),
    },
    structs={"Layout": _Layout, "Neuron": _Neuron, "Surrogate": Surrogate},
    check=_known_answer,
)
