"""Which neuron implementation runs: the ``backend`` choices and spikingjelly's CUDA provider switches."""

from __future__ import annotations

import os

import torch

from . import internals, neurons

BACKENDS = ("auto", "torch", "triton", "cuda")
CUDA_ONLY_BACKENDS = ("triton", "cuda")
# spikingjelly's per-neuron CUDA provider switches (read once at import, so also set below)
_SJ_OPS = {
    "if": ("if_", "SJ_IF_CUDA_IMPLEMENTATION"),
    "lif": ("lif", "SJ_LIF_CUDA_IMPLEMENTATION"),
    "plif": ("plif", "SJ_PLIF_CUDA_IMPLEMENTATION"),
}


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
        selection = internals.cuda_provider_selection(package)
        if selection is not None and selection._requested != backend:
            selection._requested = backend
            selection._selections.clear()
            selection._compiled_selections.clear()


def neuron_implementation(kind: str, device: torch.device | str, backend: str = "auto") -> str:
    """Name of the implementation a ``kind`` neuron runs on ``device`` under ``backend``."""
    device = torch.device(device)
    if device.type == "cpu":
        if backend == "torch" or kind == "plif" or neurons._KERNELS.get() is None:
            return "spikingjelly-torch-reference"
        return "snn-fused-cpu"
    from spikingjelly.activation_based.functional import neuron_implementation as sj_implementation

    return "spikingjelly-" + str(sj_implementation(kind, device)["implementation"])
