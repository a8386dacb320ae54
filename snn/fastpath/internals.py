"""The private internals of torch and spikingjelly the fast paths read: each in one function here, each checked
against the versions named, guarded, and with a fallback that keeps results correct (with one warning).

``tests/snn/test_internals.py`` fails, saying which, when an installed version moves one of them.
"""

from __future__ import annotations

import importlib
import warnings

import torch

CHECKED_AGAINST = "torch 2.14.1, spikingjelly 2.0.0"
# torch's global forward hooks and pre-hooks: dicts in torch.nn.modules.module
TORCH_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks")
# spikingjelly's CUDA provider selections: module of spikingjelly._ops -> its selection object's attributes
SJ_SELECTION_ATTRIBUTES = ("_requested", "_selections", "_compiled_selections")

_told: set[str] = set()


def global_module_hooks() -> bool:
    """Whether a global forward hook or pre-hook is registered (``torch.nn.modules.module.register_module_forward_hook``).

    torch keeps them in two private dicts of ``torch.nn.modules.module``. Where those have moved, True
    (one warning): a global hook might then exist and must see every module's output, so ``fire_and_pool``
    runs the neuron and the max-pool one after the other, its reference path.
    """
    module = torch.nn.modules.module
    hooks = [getattr(module, name, None) for name in TORCH_GLOBAL_HOOKS]
    if not all(isinstance(h, dict) for h in hooks):
        warn_once(
            f"torch {torch.__version__} keeps its global forward hooks elsewhere than torch.nn.modules.module."
            f"_global_forward_hooks (checked against {CHECKED_AGAINST}): the CSNN's neuron layers and "
            f"max-pools run unfused, their reference path"
        )
        return True
    return any(hooks)


def cuda_provider_selection(package: str):
    """spikingjelly's CUDA provider selection of one neuron kind (``spikingjelly._ops.<package>._selection``), or None.

    spikingjelly reads ``SJ_<NEURON>_CUDA_IMPLEMENTATION`` once, at import, into this object, which
    caches its choice. None (one warning) where the module, the object or its attributes have moved: the
    variables then reach only processes that import spikingjelly afterwards (Ray's trial workers), and
    this process keeps spikingjelly's choice, which computes the same neuron.
    """
    try:
        selection = importlib.import_module(f"spikingjelly._ops.{package}")._selection
    except (ImportError, AttributeError):
        selection = None
    if selection is None or not all(hasattr(selection, a) for a in SJ_SELECTION_ATTRIBUTES):
        warn_once(
            f"spikingjelly's CUDA provider selection (spikingjelly._ops.{package}._selection) has moved "
            f"(checked against {CHECKED_AGAINST}): the backend applies to processes started from now on, "
            f"not to this one"
        )
        return None
    return selection


def warn_once(message: str) -> None:
    if message not in _told:
        _told.add(message)
        warnings.warn(message, stacklevel=3)
