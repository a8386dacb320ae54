"""The FC-SNN's Poisson input current, drawing random numbers only for the pixels that can vary.

The Poisson input draws T x N x 784 uniform numbers per batch, and most MNIST pixels are 0
(never spike). ``poisson_input_current`` draws only for the fractional pixels, four 16-bit
uniforms per 64-bit draw, and feeds only their spikes through the linear layer; every pixel
still spikes at every step, independently, with probability equal to its intensity (to 2^-16).
On a CPU with a C compiler the spikes meet the weight in ``poisson.c``, image by image with no
padding; elsewhere in padded groups of images by torch's batched matmul.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import torch

from . import native

# Each 64-bit draw is split into four 16-bit uniform lanes, so a spike costs a quarter of a draw.
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
    """int16 tensor of ``shape``, every element an independent uniform 16-bit lane (``draw_lanes``)."""
    return draw_lanes([shape], device)[0]


def draw_lanes(shapes: list[tuple[int, ...]], device: torch.device | str) -> list[torch.Tensor]:
    """An int16 tensor of independent uniform 16-bit lanes for each of ``shapes``, from one draw.

    On a CPU the lanes are 64-bit numbers of numpy's PCG64, each viewed as four lanes, from a
    stream seeded by 256 bits of torch's default generator: ``torch.manual_seed`` makes the
    draw reproducible. PCG64 takes about 1.7 ns a 64-bit number here, torch's CPU generator
    (mt19937) about 2.5 ns: an FC batch (about 500,000 numbers) saves 0.3-0.4 ms. On a GPU the
    lanes are torch's own draws (its generator is parallel there).
    """
    counts = [math.prod(shape) for shape in shapes]
    words = [-(-count // _LANES_PER_DRAW) for count in counts]  # 64-bit numbers per shape
    if torch.device(device).type != "cpu":
        return [torch.empty(w, dtype=torch.int64, device=device).random_(-2**63, None).view(torch.int16)[:count]
                .view(shape) for shape, count, w in zip(shapes, counts, words)]
    seed = [w % 2**64 for w in torch.empty(4, dtype=torch.int64).random_(-2**63, None).tolist()]
    raw = np.random.PCG64(np.random.SeedSequence(seed)).random_raw(sum(words))  # uint64
    ends = np.cumsum([0, *words]).tolist()
    return [torch.from_numpy(raw[start:end].view(np.int16))[:count].view(shape)
            for shape, count, start, end in zip(shapes, counts, ends, ends[1:])]


def bernoulli_spikes(thresholds: torch.Tensor, T: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """T independent Bernoulli spikes per element: thresholds [...] (``spike_thresholds``) -> [..., T] 0/1."""
    return _spikes(uniform_lanes((*thresholds.shape, T), thresholds.device), thresholds, dtype)


def _spikes(lanes: torch.Tensor, thresholds: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1 where a lane [..., T] is below its element's threshold [...], else 0."""
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
    image (about 145 of 784 on MNIST). ``poisson.c`` (float32 on a CPU, a C compiler at hand)
    adds each spiking pixel's weights into its image's current, and in the backward each spike's
    current gradient into its pixel's weight gradient: one draw of [M, T] lanes for the batch's M
    fractional pixels. Otherwise the images are split into ``INPUT_GROUPS`` groups by their count
    of fractional pixels; within a group each image's count is padded to the group's largest
    with probability 0, and the group's spikes [n, K, T] go through the weight by one batched
    matmul. The draws are 16-bit lanes (``bernoulli_spikes``): each spike
    probability is within 7.6e-6 of the intensity for MNIST's k/255 levels (2^-16 at worst);
    only the summation order of the current differs otherwise.
    """
    n, p = images.shape
    always = images >= 1.0  # [N, P]
    fractional = (images > 0.0) & ~always  # [N, P]
    constant = always.to(weight.dtype) @ weight.t()  # [N, O]
    counts = fractional.sum(1)
    if n == 0 or int(counts.max()) == 0:
        return constant.expand(T, n, weight.shape[0])
    if images.device.type == "cpu" and weight.dtype == torch.float32 and (lib := _KERNELS.get()) is not None:
        # poisson.c: every image's fractional pixels, row-major, drawn for in one piece, no padding
        rows, pixels = fractional.nonzero(as_tuple=True)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        thresholds = spike_thresholds(images[rows, pixels])
        lanes = uniform_lanes((len(pixels), T), images.device)  # [M, T]
        return _PoissonCurrent.apply(weight, constant, lanes, thresholds, pixels, offsets, lib)
    constant = constant.unsqueeze(2)  # [N, O, 1]
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
    size = -(-n // INPUT_GROUPS)  # images per group, as torch.chunk splits
    groups = [(first, min(first + size, n)) for first in range(0, n, size)]
    shapes = [(last - first, counts[last - 1], T) for first, last in groups]  # [n, K, T], K: the largest count
    parts = []
    for (first, last), lanes in zip(groups, draw_lanes(shapes, images.device)):  # one draw for the batch
        part = slice(ends[first], ends[last])  # the group's pixels in rows, slots, pixels, thresholds
        parts.append(_group_current(rows[part] - first, slots[part], pixels[part], thresholds[part], lanes,
                                    pixel_major))
    current = torch.cat(parts).index_select(0, torch.argsort(by_count))  # [N, O, T], the batch's order
    # [T, N, O] contiguous: the neuron's time loop then reads each step's [N, O] in one piece
    return (current + constant).permute(2, 0, 1).contiguous()


class _Pixels(ctypes.Structure):
    """poisson.c's Pixels: the batch's fractional pixels, their thresholds and lanes, image by image."""

    _fields_ = [("lanes", ctypes.c_void_p), ("thresholds", ctypes.c_void_p), ("pixels", ctypes.c_void_p),
                ("offsets", ctypes.c_void_p), ("N", ctypes.c_int64), ("O", ctypes.c_int64), ("T", ctypes.c_int64)]


_KERNELS = native.Kernels("poisson.c", {
    "poisson_current_forward": (None, [ctypes.POINTER(_Pixels), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.c_int]),
    "poisson_current_backward": (None, [ctypes.POINTER(_Pixels), ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                        ctypes.c_int]),
})


class _PoissonCurrent(torch.autograd.Function):
    """poisson.c's current [T, N, O] and the weight's gradient, from the lanes drawn for the fractional pixels."""

    @staticmethod
    def forward(ctx, weight, constant, lanes, thresholds, pixels, offsets, lib):
        (n, o), T = constant.shape, lanes.shape[1]
        weight_t = weight.detach().t().contiguous()  # [P, O]: a pixel's weights side by side
        constant = constant.detach().contiguous()
        current = torch.empty(T, n, o)
        lib.poisson_current_forward(_pixels(lanes, thresholds, pixels, offsets, n, o), weight_t.data_ptr(),
                                    constant.data_ptr(), current.data_ptr(), torch.get_num_threads())
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
            ctx.lib.poisson_current_backward(_pixels(lanes, thresholds, pixels, offsets, n, o), grad.data_ptr(),
                                             ctx.pixels_in, grad_weight_t.data_ptr(), torch.get_num_threads())
            grad_weight = grad_weight_t.t()
        grad_constant = grad.sum(0) if ctx.needs_input_grad[1] else None
        return grad_weight, grad_constant, None, None, None, None, None


def _pixels(lanes, thresholds, pixels, offsets, n: int, o: int) -> _Pixels:
    """poisson.c's view of the fractional pixels (the tensors must outlive the call)."""
    return _Pixels(lanes.data_ptr(), thresholds.data_ptr(), pixels.data_ptr(), offsets.data_ptr(), n, o,
                   lanes.shape[1])


def _group_current(rows: torch.Tensor, slots: torch.Tensor, pixels: torch.Tensor, thresholds: torch.Tensor,
                   lanes: torch.Tensor, pixel_major: torch.Tensor) -> torch.Tensor:
    """Input current [n, O, T] of n images' fractional pixels (image ``rows``, place ``slots`` < K,
    ``pixels``, spike ``thresholds``), drawn with ``lanes`` [n, K, T]; ``pixel_major`` is the weight as [P, O]."""
    n, k, T = lanes.shape
    if k == 0:
        return pixel_major.new_zeros(n, pixel_major.shape[1], T)
    # slot j of image i holds its j-th fractional pixel; the padding after them holds pixel 0 with a
    # threshold no lane is below (never spikes, so it adds nothing to the current or the gradient)
    order = torch.zeros(n, k, dtype=torch.long, device=pixels.device)  # [n, K]
    order[rows, slots] = pixels
    padded = torch.full((n, k), -_LANE_LEVELS // 2, dtype=torch.int16, device=pixels.device)
    padded[rows, slots] = thresholds
    spikes = _spikes(lanes, padded, pixel_major.dtype)  # [n, K, T]
    # index_select's backward is an index_add_, several times faster on the CPU than the
    # accumulating index_put_ that advanced indexing (weight[:, order]) backpropagates through
    pixel_weights = pixel_major.index_select(0, order.reshape(-1)).view(n, k, -1)  # [n, K, O]
    return torch.bmm(pixel_weights.transpose(1, 2), spikes)  # [n, O, K] @ [n, K, T] -> [n, O, T]
