"""The CSNN's max-pool: spikingjelly's MaxPool2d, marked so that ``fire_and_pool`` may fuse it with its neuron."""

from __future__ import annotations

from spikingjelly.activation_based import layer


class FastMaxPool2d(layer.MaxPool2d):
    """spikingjelly's MaxPool2d (aten's max-pool); a 2x2 window of stride 2 after a fused neuron runs, with that
    neuron, in ``fire_pool.c`` (``fire_and_pool``). On its own it is spikingjelly's layer, the reference path."""

    fused = True  # set False (backend "torch") to keep the neuron and the pool apart

    def is_2x2(self) -> bool:
        """A 2x2 window of stride 2, no padding, dilation, indices or ceil mode: what fire_pool.c computes."""
        return (
            _pair(self.kernel_size) == (2, 2)
            and _pair(self.stride or self.kernel_size) == (2, 2)
            and _pair(self.padding) == (0, 0)
            and _pair(self.dilation) == (1, 1)
            and not self.return_indices
            and not self.ceil_mode
        )


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
