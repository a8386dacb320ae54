"""The inductor-compiled kernels' shared switch: how large a step must be, and compile-or-fall-back."""

from __future__ import annotations

import warnings

import torch

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
