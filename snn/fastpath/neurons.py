"""spikingjelly's IF/LIF nodes whose multi-step forward and backward run in one call of a C kernel on the CPU.

spikingjelly 2.0's multi-step IF/LIF neurons run on the CPU as its Torch reference: about ten
autograd-recorded tensor ops per time step, each a full pass over ``[N, ...]``. ``FusedIFNode`` /
``FusedLIFNode`` are spikingjelly's own ``IFNode`` / ``LIFNode`` whose multi-step forward and
backward (spikingjelly's hand-written one, ``_ops/*/cpu.py``) run all steps in one call of a C
kernel (``neurons.c``, built and checked by ``native`` on first use). Spikes and voltages are
bit-identical to spikingjelly's, gradients agree to float rounding (tests/snn/test_fast_paths.py,
and the known-answer check where the kernel is built). Half-precision currents are cast to float32
first. Where the kernel is not available (no C compiler, a failed check, ``SNN_C_KERNELS=0``) and
for anything outside the kernel's profile (CUDA, other dtypes, soft reset, ``detach_reset``,
surrogates other than spikingjelly's ATan and Sigmoid), the node runs spikingjelly's own path.
"""

from __future__ import annotations

import ctypes
import math
from collections import OrderedDict

import torch
from spikingjelly.activation_based import neuron, surrogate
from torch.utils.hooks import RemovableHandle

from ..spikes import count_spikes
from . import native


class _Layer(ctypes.Structure):
    """neurons.c's Layer: T steps of M neurons; tau 0 for IF."""

    _fields_ = [("T", ctypes.c_int64), ("M", ctypes.c_int64), ("tau", ctypes.c_float), ("threshold", ctypes.c_float)]


class Surrogate(ctypes.Structure):
    """neuron_step.h's Surrogate (the C kernels' surrogate gradient): its id (0 Sigmoid, 1 ATan), alpha,
    pi / 2 * alpha and alpha / 2, the constants rounded to float as spikingjelly's Python rounds them."""

    _fields_ = [
        ("id", ctypes.c_int),
        ("alpha", ctypes.c_float),
        ("scale", ctypes.c_float),
        ("half_alpha", ctypes.c_float),
    ]

    @classmethod
    def of(cls, surrogate_id: int, alpha: float) -> Surrogate:
        return cls(surrogate_id, alpha, math.pi / 2 * alpha, alpha / 2)


# The surrogates the kernels compute (neuron_step.h), by spikingjelly's public classes: subclasses may
# compute something else, so only these exact types.
_SURROGATE_IDS = {surrogate.Sigmoid: 0, surrogate.ATan: 1}


def surrogate_spec(function) -> tuple[int, float] | None:
    """(the kernels' id, alpha) of spikingjelly's ATan or Sigmoid surrogate; None for any other."""
    surrogate_id = _SURROGATE_IDS.get(type(function))
    alpha = getattr(function, "alpha", None)
    if surrogate_id is None or not getattr(function, "spiking", True):
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        return None  # a learnable (tensor) alpha: not what the kernels take
    return surrogate_id, float(alpha)


def _known_answer(lib) -> str | None:
    """neurons.c against spikingjelly's own IFNode / LIFNode: None, or the first difference found."""
    generator = torch.Generator().manual_seed(0)  # never torch's global generator: a user's seed stays theirs

    def randn(*shape):
        return torch.randn(shape, generator=generator)

    # IF and LIF, both surrogates, and a layer large enough (T * M >= neurons.c's PARALLEL_MIN) to be split
    # between threads
    cases = [
        ("IF, ATan", None, surrogate.ATan(), (5, 3, 4, 6, 6)),
        ("LIF, Sigmoid", 2.0, surrogate.Sigmoid(), (6, 16, 10)),
        ("LIF, ATan alpha 4", 3.5, surrogate.ATan(alpha=4.0), (2, 4, 8, 32, 32)),
    ]
    for name, tau, function, shape in cases:
        x, upstream, v_upstream = randn(*shape) * 1.5 + 0.4, randn(*shape), randn(*shape[1:])
        if tau is None:
            reference = neuron.IFNode(surrogate_function=function, step_mode="m")
        else:
            reference = neuron.LIFNode(tau=tau, surrogate_function=function, step_mode="m")
        x_ref = x.clone().requires_grad_()
        ref_spikes = reference(x_ref)
        (ref_grad,) = torch.autograd.grad((ref_spikes * upstream).sum() + (reference.v * v_upstream).sum(), x_ref)
        surrogate_id, alpha = surrogate_spec(function)
        x_fast = x.clone().requires_grad_()
        spikes, v = _FusedIFLIF.apply(x_fast, torch.zeros(shape[1:]), tau, 1.0, alpha, surrogate_id, lib)
        (grad,) = torch.autograd.grad((spikes * upstream).sum() + (v * v_upstream).sum(), x_fast)
        error = (
            native.mismatch("spikes", spikes, ref_spikes, exact=True)
            or native.mismatch("last voltages", v, reference.v, exact=True)
            or native.mismatch("input gradients", grad, ref_grad)
        )
        if error:
            return f"{name} {list(shape)}: {error}"
    # inference on one channels_last current presented at every step (stride 0 over T), as the CSNN runs
    step = (randn(3, 5, 6, 6) * 1.5 + 0.4).contiguous(memory_format=torch.channels_last)
    x = step.unsqueeze(0).expand(4, *step.shape)
    reference = neuron.IFNode(surrogate_function=surrogate.ATan(), step_mode="m")
    with torch.no_grad():
        spikes, v, _ = _forward(lib, x, torch.zeros(step.shape), None, 1.0, keep_charge=False)
        return native.mismatch("spikes (IF, a current repeated over the steps)", spikes, reference(x), exact=True)


_KERNELS = native.Kernels(
    "neurons.c",
    {
        "if_lif_forward": (
            None,
            [
                ctypes.c_void_p,
                ctypes.c_int64,
                ctypes.c_void_p,
                ctypes.POINTER(_Layer),
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_int,
            ],
        ),
        "if_lif_backward": (
            None,
            [
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.POINTER(_Layer),
                ctypes.POINTER(Surrogate),
                ctypes.c_void_p,
                ctypes.c_int,
            ],
        ),
    },
    structs={"Layer": _Layer, "Surrogate": Surrogate},
    check=_known_answer,
)


def _forward(
    lib, x_seq: torch.Tensor, v: torch.Tensor, tau: float | None, threshold: float, keep_charge: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """neurons.c's forward of IF (tau None) or LIF (decay_input, v_reset 0) over x_seq [T, ...], without autograd.

    Returns the spikes [T, ...], the last V [...] and, when ``keep_charge``, the charges H [T, ...].
    """
    spikes = torch.empty_strided(x_seq.shape, _dense_strides(x_seq), dtype=torch.float32)
    if not _same_layout(x_seq, spikes):
        x_seq = torch.empty_like(spikes).copy_(x_seq)
    charge = torch.empty_like(spikes) if keep_charge else None
    v = _like(v.detach(), spikes[0], copy=True)  # the kernel updates it in place to the last V
    layer = _Layer(len(x_seq), spikes[0].numel(), 0.0 if tau is None else tau, threshold)
    lib.if_lif_forward(
        x_seq.data_ptr(),
        x_seq.stride(0),
        v.data_ptr(),
        layer,
        spikes.data_ptr(),
        None if charge is None else charge.data_ptr(),
        torch.get_num_threads(),
    )
    return spikes, v, charge


def _same_layout(x_seq: torch.Tensor, dense: torch.Tensor) -> bool:
    """x_seq's steps are laid out as the dense [T, ...] tensor's, one after another or all one (stride 0)."""
    return (
        x_seq.dtype == torch.float32
        and x_seq[0].stride() == dense[0].stride()
        and x_seq.stride(0) in (0, dense[0].numel())
    )


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


class _FusedIFLIF(torch.autograd.Function):
    """IF/LIF multi-step neuron in neurons.c, with spikingjelly's hand-written backward (``_ops/lif/cpu.py``)."""

    @staticmethod
    def forward(ctx, x_seq, v_init, tau, threshold, alpha, surrogate_id, lib):
        spikes, v, charge = _forward(lib, x_seq, v_init, tau, threshold, keep_charge=True)
        ctx.save_for_backward(charge)
        ctx.params = (tau, threshold, alpha, surrogate_id, lib)
        ctx.set_materialize_grads(False)  # the last V rarely reaches the loss: no zero gradient for it
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes, grad_v):
        (charge,) = ctx.saved_tensors
        tau, threshold, alpha, surrogate_id, lib = ctx.params
        grad_spikes = torch.zeros_like(charge) if grad_spikes is None else _like(grad_spikes, charge)
        carry = torch.zeros_like(charge[0]) if grad_v is None else _like(grad_v, charge[0], copy=True)
        grad_x = torch.empty_like(charge)
        layer = _Layer(len(charge), charge[0].numel(), 0.0 if tau is None else tau, threshold)
        lib.if_lif_backward(
            grad_spikes.data_ptr(),
            charge.data_ptr(),
            carry.data_ptr(),
            layer,
            Surrogate.of(surrogate_id, alpha),
            grad_x.data_ptr(),
            torch.get_num_threads(),
        )
        return grad_x, carry if ctx.needs_input_grad[1] else None, None, None, None, None, None


class _FusedMultiStep:
    """Mixin: run spikingjelly's IF/LIF multi-step forward through neurons.c where it computes exactly that.

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
            self.tell_spike_counters(
                count_spikes(spikes), spikes.numel(), spikes.shape[0] if self.step_mode == "m" else 1
            )
        return spikes

    def _fused_tau(self) -> float | None:
        return None

    def _fused_profile(self, x_seq: torch.Tensor) -> tuple[int, float] | None:
        """(surrogate id, alpha) when the C kernels compute exactly this neuron on x_seq, else None."""
        if not (
            self.fused
            and x_seq.device.type == "cpu"
            and x_seq.dtype == torch.float32
            and x_seq.dim() >= 2
            and x_seq.shape[0] >= 1
        ):
            return None
        if self.v_reset != 0.0 or self.detach_reset or self.store_v_seq or not getattr(self, "decay_input", True):
            return None
        return surrogate_spec(self.surrogate_function)

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        if self.fused and x_seq.dtype in (torch.float16, torch.bfloat16):
            # autocast hands the neuron half-precision currents: keep its state and dynamics in
            # float32 (spikingjelly's fast kernels need a float32 state); spikes are exact anyway
            x_seq = x_seq.float()
        profile = self._fused_profile(x_seq) if not args and not kwargs else None
        lib = _KERNELS.get() if profile is not None else None
        if lib is None:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        v = self.materialize_states((x_seq,), (self.v,), "m")[0]
        if v.dtype != torch.float32:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        surrogate_id, alpha = profile
        threshold = float(self.v_threshold)
        if torch.is_grad_enabled() and (x_seq.requires_grad or v.requires_grad):
            spikes, v = _FusedIFLIF.apply(x_seq, v, self._fused_tau(), threshold, alpha, surrogate_id, lib)
        else:
            spikes, v, _ = _forward(lib, x_seq, v, self._fused_tau(), threshold, keep_charge=False)
        self.v = v
        return spikes


class FusedIFNode(_FusedMultiStep, neuron.IFNode):
    """spikingjelly's IFNode; multi-step on the CPU runs neurons.c."""


class FusedLIFNode(_FusedMultiStep, neuron.LIFNode):
    """spikingjelly's LIFNode; multi-step on the CPU runs neurons.c."""

    def _fused_tau(self) -> float | None:
        return float(self.tau)
