"""The private parts of torch and spikingjelly the fast paths read (snn/fastpath/internals.py): each still where
the installed versions keep it, and each use falls back, with one warning, where a version has moved it."""

from __future__ import annotations

import importlib
import os
import warnings

import pytest
import torch

from snn import fastpath
from snn.fastpath import FastMaxPool2d, fire_and_pool, internals

from .test_fast_paths import kernel_calls, pair, use_kernels

MOVED = (
    "installed {what} no longer has {where} (checked against " + internals.CHECKED_AGAINST + "): "
    "update snn/fastpath/internals.py"
)


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(internals, "_told", set())


def test_torch_keeps_its_global_forward_hooks_where_fire_pool_looks():
    module = torch.nn.modules.module
    for name in internals.TORCH_GLOBAL_HOOKS:
        assert isinstance(getattr(module, name, None), dict), MOVED.format(
            what=f"torch {torch.__version__}", where=f"torch.nn.modules.module.{name}"
        )
    assert internals.global_module_hooks() is False
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        assert internals.global_module_hooks() is True
    finally:
        handle.remove()


def test_a_global_hook_sees_the_full_spikes(monkeypatch):
    """fire_and_pool leaves the neuron and the pool apart while a global forward hook is registered."""
    use_kernels(monkeypatch, True)
    calls = kernel_calls(monkeypatch, fastpath.fire_pool._KERNELS)
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, out: seen.append(type(m).__name__))
    try:
        fused, _ = pair("if", "atan")
        fire_and_pool(fused, FastMaxPool2d(2, step_mode="m"), torch.randn(3, 2, 4, 8, 8))
    finally:
        handle.remove()
    assert calls == [] and seen == ["FusedIFNode", "FastMaxPool2d"]


def test_where_torch_moved_its_global_hooks_the_blocks_run_unfused_with_one_warning(monkeypatch, fresh):
    monkeypatch.setattr(internals, "TORCH_GLOBAL_HOOKS", ("_global_forward_hooks", "_hooks_of_a_later_torch"))
    use_kernels(monkeypatch, True)
    calls = kernel_calls(monkeypatch, fastpath.fire_pool._KERNELS)
    x = torch.randn(3, 2, 4, 8, 8)
    with pytest.warns(UserWarning, match="global forward hooks elsewhere .* run unfused") as warned:
        for _ in range(2):
            fused, reference = pair("if", "atan")
            pool = FastMaxPool2d(2, step_mode="m")
            assert torch.equal(fire_and_pool(fused, pool, x), pool(reference(x)))
    assert calls == [] and len([w for w in warned if "hooks" in str(w.message)]) == 1


@pytest.mark.parametrize("package", ["if_", "lif", "plif"])
def test_spikingjelly_keeps_its_cuda_provider_selections_where_select_cuda_backend_looks(package):
    selection = getattr(importlib.import_module(f"spikingjelly._ops.{package}"), "_selection", None)
    where = f"spikingjelly._ops.{package}._selection with " + ", ".join(internals.SJ_SELECTION_ATTRIBUTES)
    assert selection is not None and all(hasattr(selection, a) for a in internals.SJ_SELECTION_ATTRIBUTES), (
        MOVED.format(what="spikingjelly", where=where)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # found: no warning
        assert internals.cuda_provider_selection(package) is selection


def test_where_spikingjelly_moved_its_selections_the_variables_are_still_set_with_one_warning(monkeypatch, fresh):
    import spikingjelly._ops.lif as sj_lif

    monkeypatch.delattr(sj_lif, "_selection")
    saved = {var: os.environ.get(var) for _, var in fastpath.backends._SJ_OPS.values()}
    try:
        with pytest.warns(UserWarning, match=r"spikingjelly._ops.lif._selection\) has moved") as warned:
            fastpath.select_cuda_backend("torch")
            fastpath.select_cuda_backend("torch")
        assert len(warned) == 1
        assert os.environ["SJ_LIF_CUDA_IMPLEMENTATION"] == "torch"
        import spikingjelly._ops.if_ as sj_if

        assert sj_if._selection._requested == "torch"  # the others still switched
    finally:
        fastpath.select_cuda_backend("auto")
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
