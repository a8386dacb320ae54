"""The FC-SNN's Poisson input current, drawing random numbers only for the pixels that can vary.

The Poisson input draws T x N x 784 uniform numbers per batch, and most MNIST pixels are 0
(never spike). ``poisson_input_current`` draws only for the fractional pixels, four 16-bit
uniforms per 64-bit draw, and ``poisson.c`` adds only their spikes' weights into the current;
every pixel still spikes at every step, independently, with probability equal to its intensity
(to 2^-16). Where the kernel is not available the reference path runs: the dense Poisson encoder
(``snn.models.poisson_encode``) and the linear layer over its spikes.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import native

# Each 64-bit draw is split into four 16-bit uniform lanes, so a spike costs a quarter of a draw.
LANE_BITS = 16
_LANE_LEVELS = 1 << LANE_BITS  # a lane u is uniform on {0, ..., 65535}
_LANES_PER_DRAW = 64 // LANE_BITS
# the tolerance the tests hold the current to (torch.testing's float32 default): only the summation order differs
RTOL, ATOL = 1.3e-6, 1e-5


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

    On a CPU the lanes are 64-bit numbers of numpy's PCG64, each viewed as four lanes, from a
    stream seeded by 256 bits of torch's default generator: ``torch.manual_seed`` makes the
    draw reproducible. PCG64 takes about 1.7 ns a 64-bit number here, torch's CPU generator
    (mt19937) about 2.5 ns: an FC batch (about 500,000 numbers) saves 0.3-0.4 ms. On a GPU the
    lanes are torch's own draws (its generator is parallel there).
    """
    count = math.prod(shape)
    words = -(-count // _LANES_PER_DRAW)  # 64-bit numbers
    if torch.device(device).type != "cpu":
        return (
            torch.empty(words, dtype=torch.int64, device=device)
            .random_(-(2**63), None)
            .view(torch.int16)[:count]
            .view(shape)
        )
    seed = [w % 2**64 for w in torch.empty(4, dtype=torch.int64).random_(-(2**63), None).tolist()]
    raw = np.random.PCG64(np.random.SeedSequence(seed)).random_raw(words)  # uint64
    return torch.from_numpy(raw.view(np.int16))[:count].view(shape)


def bernoulli_spikes(thresholds: torch.Tensor, T: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """T independent Bernoulli spikes per element: thresholds [...] (``spike_thresholds``) -> [..., T] 0/1."""
    return _spikes(uniform_lanes((*thresholds.shape, T), thresholds.device), thresholds, dtype)


def _spikes(lanes: torch.Tensor, thresholds: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1 where a lane [..., T] is below its element's threshold [...], else 0."""
    spikes = torch.empty(lanes.shape, dtype=dtype, device=lanes.device)
    # comparing straight into a float tensor is ~4x faster on the CPU than a bool result converted
    return torch.lt(lanes, thresholds.unsqueeze(-1), out=spikes)


def poisson_input_current(images: torch.Tensor, weight: torch.Tensor, T: int) -> torch.Tensor:
    """``Linear(poisson_encode(images, T))`` drawing random numbers only for pixels that can vary.

    images: [N, P] intensities in [0, 1]; weight: [O, P]  ->  input current [T, N, O].

    A pixel spikes at a step with probability equal to its intensity, as in ``poisson_encode``:
    intensity 0 never spikes and intensity 1 always does. So the always-on pixels add a
    constant current, and random numbers are drawn only for the fractional pixels of each
    image (about 145 of 784 on MNIST): one draw of [M, T] lanes for the batch's M fractional
    pixels. ``poisson.c`` (float32 on a CPU) adds each spiking pixel's weights into its image's
    current, and in the backward each spike's current gradient into its pixel's weight gradient.
    The draws are 16-bit lanes (``bernoulli_spikes``): each spike probability is within 7.6e-6 of
    the intensity for MNIST's k/255 levels (2^-16 at worst); only the summation order of the
    current differs otherwise. Where the kernel is not available: the dense encoder and the
    linear layer, the reference path.
    """
    lib = _KERNELS.get() if images.device.type == "cpu" and weight.dtype == torch.float32 else None
    if lib is None:
        return _reference(images, weight, T)
    n, p = images.shape
    always = images >= 1.0  # [N, P]
    fractional = (images > 0.0) & ~always  # [N, P]
    if n == 0 or not bool(fractional.any()):
        return (always.to(weight.dtype) @ weight.t()).expand(T, n, weight.shape[0])
    lanes = uniform_lanes((int(fractional.sum()), T), images.device)  # [M, T]
    try:
        return _current(lib, images, weight, lanes)
    except native.OutOfMemory:
        _KERNELS.refuse("could not allocate its scratch memory")
        return _reference(images, weight, T)


def _reference(images: torch.Tensor, weight: torch.Tensor, T: int) -> torch.Tensor:
    """The reference path: the dense Poisson encoder's [T, N, P] spikes through the linear layer."""
    from ..models import poisson_encode  # snn.models imports this module

    return F.linear(poisson_encode(images, T), weight)


def _current(lib, images: torch.Tensor, weight: torch.Tensor, lanes: torch.Tensor) -> torch.Tensor:
    """poisson.c's current [T, N, O] of images [N, P] with ``lanes`` [M, T] drawn for their M fractional pixels
    (row-major: image after image, each in pixel order), differentiable in the weight."""
    always = images >= 1.0
    fractional = (images > 0.0) & ~always
    constant = always.to(weight.dtype) @ weight.t()  # [N, O]: the always-on pixels' current
    rows, pixels = fractional.nonzero(as_tuple=True)
    offsets = torch.cat([rows.new_zeros(1), fractional.sum(1).cumsum(0)])
    thresholds = spike_thresholds(images[rows, pixels])
    return _PoissonCurrent.apply(weight, constant, lanes, thresholds, pixels, offsets, lib)


class _Pixels(ctypes.Structure):
    """poisson.c's Pixels: the batch's fractional pixels, their thresholds and lanes, image by image."""

    _fields_ = [
        ("lanes", ctypes.c_void_p),
        ("thresholds", ctypes.c_void_p),
        ("pixels", ctypes.c_void_p),
        ("offsets", ctypes.c_void_p),
        ("N", ctypes.c_int64),
        ("O", ctypes.c_int64),
        ("T", ctypes.c_int64),
    ]


class _PoissonCurrent(torch.autograd.Function):
    """poisson.c's current [T, N, O] and the weight's gradient, from the lanes drawn for the fractional pixels."""

    @staticmethod
    def forward(ctx, weight, constant, lanes, thresholds, pixels, offsets, lib):
        (n, o), T = constant.shape, lanes.shape[1]
        weight_t = weight.detach().t().contiguous()  # [P, O]: a pixel's weights side by side
        constant = constant.detach().contiguous()
        current = torch.empty(T, n, o)
        status = lib.poisson_current_forward(
            _pixels(lanes, thresholds, pixels, offsets, n, o),
            weight_t.data_ptr(),
            constant.data_ptr(),
            current.data_ptr(),
            torch.get_num_threads(),
        )
        if status < 0:
            raise native.OutOfMemory("poisson.c")
        ctx.save_for_backward(lanes, thresholds, pixels, offsets)
        ctx.lib, ctx.pixels_in = lib, weight.shape[1]
        return current

    @staticmethod
    def backward(ctx, grad):
        lanes, thresholds, pixels, offsets = ctx.saved_tensors
        _, n, o = grad.shape
        grad = grad.contiguous()  # [T, N, O]
        grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_weight_t = torch.empty(ctx.pixels_in, o)
            status = ctx.lib.poisson_current_backward(
                _pixels(lanes, thresholds, pixels, offsets, n, o),
                grad.data_ptr(),
                ctx.pixels_in,
                grad_weight_t.data_ptr(),
                torch.get_num_threads(),
            )
            if status < 0:  # out of memory: this gradient in torch, and the reference path from now on
                _KERNELS.refuse("could not allocate its scratch memory")
                spikes = _fractional_spikes(lanes, thresholds, pixels, offsets, n, ctx.pixels_in)  # [T, N, P]
                grad_weight_t = spikes.flatten(0, 1).t() @ grad.flatten(0, 1)
            grad_weight = grad_weight_t.t()
        grad_constant = grad.sum(0) if ctx.needs_input_grad[1] else None
        return grad_weight, grad_constant, None, None, None, None, None


def _pixels(lanes, thresholds, pixels, offsets, n: int, o: int) -> _Pixels:
    """poisson.c's view of the fractional pixels (the tensors must outlive the call)."""
    return _Pixels(lanes.data_ptr(), thresholds.data_ptr(), pixels.data_ptr(), offsets.data_ptr(), n, o, lanes.shape[1])


def _fractional_spikes(lanes, thresholds, pixels, offsets, n: int, p: int) -> torch.Tensor:
    """The fractional pixels' spikes as a dense [T, N, P] tensor (0 at every other pixel)."""
    rows = torch.repeat_interleave(torch.arange(n), offsets.diff())
    spikes = torch.zeros(lanes.shape[1], n, p)
    spikes[:, rows, pixels] = _spikes(lanes, thresholds, torch.float32).t()
    return spikes


def _known_answer(lib) -> str | None:
    """poisson.c against the dense computation from the same lanes: None, or the first difference found."""
    generator = torch.Generator().manual_seed(0)  # never torch's global generator
    n, p, o, T = 6, 50, 10, 37  # T: two of poisson.c's 16-step partial sums and a remainder
    images = torch.rand(n, p, generator=generator)
    images[:, :10] = 0.0  # pixels at 0 never spike
    images[:, 10:15] = 1.0  # pixels at 1 always do
    images[0] = 0.0  # an image with no fractional pixel, and one with nothing but 0 and 1
    images[1] = (images[1] > 0.5).float()
    weight = torch.randn(o, p, generator=generator)
    upstream = torch.randn(T, n, o, generator=generator)
    fractional = (images > 0) & (images < 1)
    lanes = torch.randint(-(2**15), 2**15, (int(fractional.sum()), T), generator=generator, dtype=torch.int16)
    w_fast = weight.clone().requires_grad_()
    current = _current(lib, images, w_fast, lanes)
    (grad,) = torch.autograd.grad(current, w_fast, upstream)
    # the reference: every pixel's spikes in one dense [T, N, P] tensor through the linear layer
    rows, pixels = fractional.nonzero(as_tuple=True)
    spikes = (images >= 1.0).float().expand(T, n, p).clone()
    spikes[:, rows, pixels] = _spikes(lanes, spike_thresholds(images[rows, pixels]), torch.float32).t()
    w_ref = weight.clone().requires_grad_()
    ref_current = F.linear(spikes, w_ref)
    (ref_grad,) = torch.autograd.grad(ref_current, w_ref, upstream)
    return native.mismatch("currents", current, ref_current, rtol=RTOL, atol=ATOL) or native.mismatch(
        "weight gradients", grad, ref_grad, rtol=RTOL, atol=ATOL
    )


_KERNELS = native.Kernels(
    "poisson.c",
    {
        "poisson_current_forward": (
            ctypes.c_int,
            [ctypes.POINTER(_Pixels), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int],
        ),
        "poisson_current_backward": (
            ctypes.c_int,
            [ctypes.POINTER(_Pixels), ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int],
        ),
    },
    structs={"Pixels": _Pixels},
    check=_known_answer,
)
