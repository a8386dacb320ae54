"""The inductor-compiled max-pool's switch: how large an input must be, and compile-or-fall-back."""

from __future__ import annotations

import warnings

import torch

# From this many elements (a CSNN block's spikes, when a hook keeps fire_pool from fusing it with its
# neuron), the max of four strided views is memory-bound in eager torch; torch.compile (inductor's C++
# code) makes it one pass. The first call compiles for 15-60 s (cached on disk for later runs).
# Smaller inputs would not repay the compile.
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
