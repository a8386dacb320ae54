"""The fused neuron + max-pool kernel computes pool(neuron(x)), and falls back to it where it must.

Correctness only; speed is measured by ``python -m benchmarks.train_speed``, never here.
"""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional

from snn import fastpath
from snn.config import RunConfig
from snn.fastpath import FastMaxPool2d, fire_and_pool
from snn.networks import build_model
from snn.spikes import record_activity

from .test_fast_paths import fail_allocations, kernel_calls, pair, use_kernels


def currents(shape, channels_last: bool, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    x = torch.randn(shape) * 1.5 + 0.4  # around the threshold: spiking and silent neurons both
    if channels_last:  # each step channels_last, steps one after another
        steps = x.flatten(0, -4) if x.dim() == 5 else x
        x = steps.contiguous(memory_format=torch.channels_last).view(shape)
    return x


def both_ways(neuron_pair, x: torch.Tensor, steps: int | None, upstream: torch.Tensor):
    """(pooled, last V, dL/dx) of fire_and_pool with the fused neuron and of pool(neuron(x)) with spikingjelly's."""
    results = []
    for node, fused in zip(neuron_pair, (True, False)):
        pool = FastMaxPool2d(2, step_mode="m")
        pool.fused = fused
        functional.reset_net(node)
        x_in = x.detach().clone().requires_grad_()
        if fused:
            out = fire_and_pool(node, pool, x_in, steps=steps)
        else:
            out = pool(node(x_in if steps is None else x_in.unsqueeze(0).expand(steps, *x_in.shape)))
        (grad,) = torch.autograd.grad((out * upstream).sum(), x_in)
        results.append((out.detach(), node.v.detach(), grad))
    return results


@pytest.mark.parametrize("kind,tau", [("if", 2.0), ("lif", 2.5)])
@pytest.mark.parametrize("surrogate_name", ["atan", "sigmoid"])
@pytest.mark.parametrize("channels_last", [False, True])
# [T, N, C, H, W] currents, or one current presented at every step (steps); 28x28: a block of
# several row pairs; 6x10: blocks of one row pair at C = 80 (channels_last) and the whole plane (NCHW)
@pytest.mark.parametrize(
    "shape,steps", [((4, 3, 5, 28, 28), None), ((3, 5, 28, 28), 4), ((6, 2, 80, 6, 10), None), ((2, 80, 6, 10), 3)]
)
def test_fused_fire_and_pool_equals_pool_of_neuron(kind, tau, surrogate_name, channels_last, shape, steps, monkeypatch):
    use_kernels(monkeypatch, True)
    calls = kernel_calls(monkeypatch, fastpath.fire_pool._KERNELS)
    x = currents(shape, channels_last, seed=3)
    T = steps or shape[0]
    n, c, h, w = shape[-4:]
    upstream = torch.randn(T, n, c, h // 2, w // 2)
    (out, v, grad), (ref_out, ref_v, ref_grad) = both_ways(pair(kind, surrogate_name, tau=tau), x, steps, upstream)
    assert calls == ["fire_pool_forward", "fire_pool_backward"]  # the fused kernel ran, both ways
    assert 0.05 < ref_out.mean() < 0.95
    assert torch.equal(out, ref_out)
    assert torch.equal(v, ref_v)
    assert out.stride() == ref_out.stride()  # the pooled spikes keep the layout: channels_last stays so
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_fused_gradient_is_bit_identical_for_the_seed_csnn_block(monkeypatch):
    """IF, ATan: the kernel's backward is the unfused fused-neuron's float ops in the same order."""
    use_kernels(monkeypatch, True)
    x = currents((16, 64, 28, 28), False, seed=5)
    upstream = torch.randn(4, 16, 64, 14, 14)
    fused_pair = (pair("if", "atan")[0], pair("if", "atan")[0])  # unfused: FusedIFNode, then aten's max-pool
    (out, v, grad), (ref_out, ref_v, ref_grad) = both_ways(fused_pair, x, 4, upstream)
    assert torch.equal(out, ref_out) and torch.equal(v, ref_v) and torch.equal(grad, ref_grad)


@pytest.mark.parametrize("case", ["hook", "odd width", "carried state", "kernels off", "unfused pool"])
def test_fire_and_pool_falls_back_where_the_kernel_does_not_apply(case, monkeypatch):
    """Each case runs pool(neuron(x)) itself, with the same result."""
    use_kernels(monkeypatch, case != "kernels off")
    calls = kernel_calls(monkeypatch, fastpath.fire_pool._KERNELS)
    shape = (4, 2, 3, 8, 9 if case == "odd width" else 8)
    x = currents(shape, False, seed=7)
    fused, reference = pair("if", "atan")
    pool, ref_pool = FastMaxPool2d(2, step_mode="m"), FastMaxPool2d(2, step_mode="m")
    pool.fused = case != "unfused pool"
    seen = []
    if case == "hook":
        fused.register_forward_hook(lambda _m, _i, spikes: seen.append(spikes.shape))
    if case == "carried state":
        fused(x)
        reference(x)
    out = fire_and_pool(fused, pool, x)
    assert calls == []
    assert torch.equal(out, ref_pool(reference(x)))
    if case == "hook":
        assert seen == [torch.Size(shape)]  # the hook saw the full spikes


def test_activity_counts_are_the_same_fused_and_unfused(monkeypatch):
    """record_activity gets the fused layers' spike counts from the kernel: rates, spikes and SynOps equal."""
    use_kernels(monkeypatch, True)
    calls = kernel_calls(monkeypatch, fastpath.fire_pool._KERNELS)
    config = RunConfig(model="csnn", net={"channels": 8, "T": 3})
    torch.manual_seed(0)
    model = build_model(config).eval()
    images = torch.rand(6, 1, 28, 28)
    metrics = []
    for fused in (True, False):
        fastpath.set_fused(model, fused)
        with torch.no_grad(), record_activity(model) as activity:
            model(images)
        metrics.append((activity.rates, activity.metrics()))
    assert calls == ["fire_pool_forward", "fire_pool_forward"]  # both blocks fused in the first pass only
    assert metrics[0] == metrics[1]
    assert metrics[0][0]["sn1"] > 0


def test_training_steps_of_the_csnn_match_with_and_without_the_kernels(monkeypatch):
    """Two SGD steps of a small CSNN: the same loss and weights with the C kernels as with the torch paths."""
    results = []
    for on in (True, False):
        use_kernels(monkeypatch, on)
        torch.manual_seed(0)
        model = build_model(RunConfig(model="csnn", net={"channels": 8, "T": 4})).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        images, labels = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
        for _ in range(2):
            loss = ((model(images) - torch.nn.functional.one_hot(labels, 10).float()) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        results.append((loss.item(), [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- out of memory


@pytest.mark.parametrize("function", ["fire_pool_forward", "fire_pool_backward"])
def test_fire_pool_out_of_memory_falls_back_to_the_reference_path(function, monkeypatch):
    """fire_pool.c reports that malloc failed: that call's spikes (or gradient) come from the reference path,
    pool(neuron(x)), with one warning, and the reference path runs from then on."""
    use_kernels(monkeypatch, True)
    fail_allocations(monkeypatch, fastpath.fire_pool._KERNELS, function)
    x = currents((3, 2, 4, 8, 8), False, seed=11)
    upstream = torch.randn(3, 2, 4, 4, 4)
    with pytest.warns(
        UserWarning, match="fire_pool.c could not allocate its scratch memory; running the reference path instead"
    ) as warned:
        (out, v, grad), (ref_out, ref_v, ref_grad) = both_ways(pair("lif", "atan"), x, None, upstream)
        both_ways(pair("lif", "atan"), x, None, upstream)  # the reference path, told once
    assert len(warned) == 1 and fastpath.fire_pool._KERNELS.get() is None
    assert torch.equal(out, ref_out) and torch.equal(v, ref_v)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_the_kernels_report_a_failed_allocation():
    """Scratch memory beyond any address space (a petabyte, for layouts with no work: G = 0, N = 0): each kernel
    returns OUT_OF_MEMORY (-1) rather than writing through a null pointer."""
    from snn.fastpath import poisson

    from .test_fast_paths import require_kernels

    require_kernels()
    fire_pool = fastpath.fire_pool._KERNELS.get()
    huge = fastpath.fire_pool._Layout(0, 2, 1 << 46, 1)  # a row pair of 2^45 windows: 1 PB of scratch a thread
    neuron = fastpath.fire_pool._Neuron(4, 0.0, 1.0)
    surrogate = fastpath.neurons.Surrogate.of(1, 2.0)
    assert fire_pool.fire_pool_forward(None, 0, huge, neuron, None, None, 2) == -1
    assert fire_pool.fire_pool_backward(None, 0, huge, neuron, None, None, surrogate, 2) == -1
    lib = poisson._KERNELS.get()
    wide = poisson._Pixels(None, None, None, None, 0, 1 << 44, 1 << 4)  # [O, T] scratch of 2^48 floats
    assert lib.poisson_current_forward(wide, None, None, None, 2) == -1
    wide = poisson._Pixels(None, None, None, None, 0, 1 << 24, 1 << 4)  # [P, O] sums of 2^48 floats a thread
    assert lib.poisson_current_backward(wide, None, 1 << 24, None, 2) == -1
