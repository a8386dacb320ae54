"""2x2 max-pooling of stride 2 as the maximum of four strided views: aten's values and gradients, faster."""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer

from . import compiled
from .compiled import _Compiled


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
    if x.numel() >= compiled.COMPILE_MIN_STEP_NUMEL:
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

    def is_2x2(self) -> bool:
        """A 2x2 window of stride 2, no padding, dilation, indices or ceil mode: what the fast paths compute."""
        return (_pair(self.kernel_size) == (2, 2) and _pair(self.stride or self.kernel_size) == (2, 2)
                and _pair(self.padding) == (0, 0) and _pair(self.dilation) == (1, 1) and not self.return_indices
                and not self.ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape_ok = x.dim() == 5 if self.step_mode == "m" else x.dim() in (3, 4)  # else spikingjelly says why not
        if not (self.fused and shape_ok and x.device.type == "cpu" and self.is_2x2()):
            return super().forward(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxPool2x2.apply(x) if x.dim() >= 4 else super().forward(x)  # aten's backward takes 4-D
        return _fast_max_pool_2x2(x)


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
