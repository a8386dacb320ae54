"""The fast paths compute what the seed's networks compute: spikingjelly's neurons, the same Poisson law.

Correctness only; speed is measured by ``python -m benchmarks.train_speed``, never here. The C kernels'
tests skip without a C compiler, and fail instead under ``SNN_REQUIRE_KERNELS=1`` (as ``.ci/run`` sets).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from spikingjelly.activation_based import functional, neuron, surrogate

from snn import fastpath
from snn.config import ConfigError, RunConfig
from snn.data import Dataset, Split, make_splits
from snn.fastpath import (
    FastMaxPool2d,
    FusedIFNode,
    FusedLIFNode,
    bernoulli_spikes,
    poisson_input_current,
    set_fused,
    spike_thresholds,
    uniform_lanes,
)
from snn.layers import poisson_encode
from snn.models import fc_snn
from snn.networks import build_model
from snn.training import rate_loss, train, use_backend

SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid}


def pair(kind: str, surrogate_name: str, alpha: float | None = None, tau: float = 2.0):
    """(fused node, spikingjelly's node) of one kind with the same parameters, multi-step."""
    fn = SURROGATES[surrogate_name]() if alpha is None else SURROGATES[surrogate_name](alpha=alpha)
    if kind == "lif":
        return (
            FusedLIFNode(tau=tau, surrogate_function=fn, step_mode="m"),
            neuron.LIFNode(tau=tau, surrogate_function=fn, step_mode="m"),
        )
    return FusedIFNode(surrogate_function=fn, step_mode="m"), neuron.IFNode(surrogate_function=fn, step_mode="m")


def run(node, x_seq: torch.Tensor, upstream: torch.Tensor):
    """Spikes, last voltage and the input gradient of ``node`` for a loss sum(spikes * upstream)."""
    x = x_seq.detach().clone().requires_grad_()
    spikes = node(x)
    (grad,) = torch.autograd.grad((spikes * upstream).sum(), x)
    return spikes.detach(), node.v.detach(), grad


def require_kernels() -> None:
    """Skip a test of the C kernels where there is no C compiler; fail instead under SNN_REQUIRE_KERNELS=1."""
    if fastpath.native.compiler() is None:
        message = "the C kernels need a C compiler (cc, gcc or clang)"
        if os.environ.get("SNN_REQUIRE_KERNELS") == "1":
            pytest.fail(f"{message}, and SNN_REQUIRE_KERNELS=1 requires their tests to run")
        pytest.skip(message)


def use_kernels(monkeypatch, on: bool) -> None:
    """The C kernels (``snn.fastpath.native``) on, or off (``SNN_C_KERNELS=0``: the reference paths)."""
    if on:
        require_kernels()
    monkeypatch.setenv("SNN_C_KERNELS", "1" if on else "0")


def fail_allocations(monkeypatch, kernels, function: str) -> None:
    """Make ``kernels``' (a ``native.Kernels``) ``function`` report that malloc failed (its OUT_OF_MEMORY, -1) and
    nothing else; the native module's warnings start afresh."""
    lib = kernels.get()
    assert lib is not None, "the C kernels did not build"

    class Failing:
        def __getattr__(self, name):
            return (lambda *args: -1) if name == function else getattr(lib, name)

    monkeypatch.setattr(fastpath.native, "_loaded", {**fastpath.native._loaded, kernels.source_name: Failing()})
    monkeypatch.setattr(fastpath.native, "_told", set())


def kernel_calls(monkeypatch, kernels) -> list[str]:
    """The names of ``kernels``' (a ``native.Kernels``) functions called from now on, in order."""
    calls: list[str] = []
    lib = kernels.get()
    assert lib is not None or not fastpath.native.enabled(), "the C kernels did not build"

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(lib, name)

    monkeypatch.setattr(kernels, "get", lambda: Spy() if fastpath.native.enabled() else None)
    return calls


@pytest.mark.parametrize("kind,tau", [("if", 2.0), ("lif", 2.0), ("lif", 3.5)])
@pytest.mark.parametrize("surrogate_name,alpha", [("atan", None), ("atan", 4.0), ("sigmoid", None)])
# the FC-SNN's layer, a small 5-D one, and one large enough for neurons.c to split it between threads
@pytest.mark.parametrize("shape", [(20, 16, 10), (4, 3, 5, 6, 6), (6, 2, 64, 12, 12)])
def test_fused_neuron_spikes_equal_spikingjelly_and_gradients_agree(
    kind, tau, surrogate_name, alpha, shape, monkeypatch
):
    use_kernels(monkeypatch, True)
    calls = kernel_calls(monkeypatch, fastpath.neurons._KERNELS)
    torch.manual_seed(0)
    x_seq = torch.randn(shape) * 1.5 + 0.4  # [T, N, ...] currents around the threshold
    upstream = torch.randn(shape)
    fused, reference = pair(kind, surrogate_name, alpha, tau)
    spikes, v, grad = run(fused, x_seq, upstream)
    ref_spikes, ref_v, ref_grad = run(reference, x_seq, upstream)
    assert 0.05 < spikes.mean() < 0.95  # the comparison exercises both spiking and silent neurons
    assert torch.equal(spikes, ref_spikes)
    assert torch.equal(v, ref_v)
    # the hand-written backward groups the same terms differently: float rounding apart only
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    assert calls == ["if_lif_forward", "if_lif_backward"]


@pytest.mark.parametrize("kind", ["if", "lif"])
def test_gradient_through_the_last_voltage_agrees_with_spikingjelly(kind, monkeypatch):
    """A loss on the neuron's last V as well as its spikes: the backward carries dL/dV through every step."""
    use_kernels(monkeypatch, True)
    calls = kernel_calls(monkeypatch, fastpath.neurons._KERNELS)
    torch.manual_seed(15)
    x_seq, upstream, v_upstream = (
        torch.randn(5, 3, 4, 6, 6) * 1.5 + 0.4,
        torch.randn(5, 3, 4, 6, 6),
        torch.randn(3, 4, 6, 6),
    )
    grads = []
    for node in pair(kind, "atan", tau=2.5):
        x = x_seq.clone().requires_grad_()
        spikes = node(x)
        (grad,) = torch.autograd.grad((spikes * upstream).sum() + (node.v * v_upstream).sum(), x)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    assert calls == ["if_lif_forward", "if_lif_backward"]


def test_without_the_kernel_the_node_runs_spikingjellys_own_path(monkeypatch):
    """SNN_C_KERNELS=0 (as without a compiler): the reference path, spikingjelly's own multi-step forward."""
    use_kernels(monkeypatch, False)
    calls = kernel_calls(monkeypatch, fastpath.neurons._KERNELS)
    ran = []
    original = neuron.IFNode.multi_step_forward
    monkeypatch.setattr(neuron.IFNode, "multi_step_forward", lambda self, x: ran.append(x.shape) or original(self, x))
    fused, reference = pair("if", "atan")
    x_seq = torch.randn(4, 3, 5)
    assert torch.equal(fused(x_seq), reference(x_seq))
    assert calls == [] and ran == [x_seq.shape, x_seq.shape]


def test_fused_neuron_on_an_expanded_channels_last_input_matches_spikingjelly(monkeypatch):
    use_kernels(monkeypatch, True)
    torch.manual_seed(1)
    image_current = (torch.randn(6, 8, 7, 7) * 0.8 + 0.5).contiguous(memory_format=torch.channels_last)
    x_seq = image_current.unsqueeze(0).expand(4, *image_current.shape)  # [T, N, C, H, W], stride 0 over T
    fused, reference = pair("if", "atan")
    spikes = fused(x_seq)
    assert spikes[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(spikes, reference(x_seq))


@pytest.mark.parametrize("kind,tau,surrogate_name", [("if", 2.0, "atan"), ("lif", 3.5, "sigmoid")])
def test_c_kernel_time_loop_equals_spikingjelly(kind, tau, surrogate_name, monkeypatch):
    """The C kernel's forward and backward ran, and compute what spikingjelly does, also on an
    expanded (stride 0 over T) channels_last input in inference, whose layout the spikes keep."""
    use_kernels(monkeypatch, True)
    calls = kernel_calls(monkeypatch, fastpath.neurons._KERNELS)
    torch.manual_seed(14)
    x_seq, upstream = torch.randn(4, 3, 5, 6, 6) * 1.5 + 0.4, torch.randn(4, 3, 5, 6, 6)
    fused, reference = pair(kind, surrogate_name, tau=tau)
    spikes, v, grad = run(fused, x_seq, upstream)
    assert calls == ["if_lif_forward", "if_lif_backward"]
    ref_spikes, ref_v, ref_grad = run(reference, x_seq, upstream)
    assert torch.equal(spikes, ref_spikes) and torch.equal(v, ref_v)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    expanded = x_seq[0].contiguous(memory_format=torch.channels_last).unsqueeze(0).expand(4, -1, -1, -1, -1)
    functional.reset_net(fused)
    functional.reset_net(reference)
    with torch.no_grad():
        spikes = fused(expanded)  # inference: no charge kept, layout kept
    assert calls[-1] == "if_lif_forward"
    assert spikes[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(spikes, reference(expanded))


def test_fused_neuron_state_carries_over_and_resets_like_spikingjelly(monkeypatch):
    use_kernels(monkeypatch, True)
    torch.manual_seed(2)
    fused, reference = pair("lif", "atan")
    first, second = torch.randn(5, 4, 3), torch.randn(5, 4, 3) + 0.5
    for x in (first, second):  # no reset between: the second call starts from the first's voltage
        assert torch.equal(fused(x), reference(x))
    functional.reset_net(fused)
    functional.reset_net(reference)
    assert torch.equal(fused(first), reference(first))


@pytest.mark.parametrize("options", [dict(detach_reset=True), dict(v_reset=None), dict(v_threshold=0.5)])
def test_neurons_outside_the_fused_profile_still_match_spikingjelly(options):
    torch.manual_seed(3)
    x_seq, upstream = torch.randn(6, 5, 4), torch.randn(6, 5, 4)
    fused = FusedIFNode(surrogate_function=surrogate.ATan(), step_mode="m", **options)
    reference = neuron.IFNode(surrogate_function=surrogate.ATan(), step_mode="m", **options)
    spikes, v, grad = run(fused, x_seq, upstream)
    ref_spikes, ref_v, ref_grad = run(reference, x_seq, upstream)
    assert torch.equal(spikes, ref_spikes) and torch.equal(v, ref_v)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_half_precision_currents_run_the_neuron_in_float32(monkeypatch):
    """What autocast hands a neuron on a GPU: its state and dynamics stay float32."""
    use_kernels(monkeypatch, True)
    torch.manual_seed(4)
    x_seq = (torch.randn(4, 8, 6) * 1.5).to(torch.bfloat16)
    fused, reference = pair("lif", "atan")
    spikes = fused(x_seq)
    assert spikes.dtype == torch.float32 and fused.v.dtype == torch.float32
    assert torch.equal(spikes, reference(x_seq.float()))


def test_backend_torch_turns_the_fused_path_off():
    model = build_model(RunConfig(model="csnn", net={"channels": 4}, backend="torch"))
    assert not any(m.fused for m in model.modules() if isinstance(m, (fastpath.neurons._FusedMultiStep, FastMaxPool2d)))
    assert not build_model(RunConfig(model="fc", backend="torch")).fc.sparse
    assert build_model(RunConfig(model="fc")).fc.sparse


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])  # as built, and NCHW
def test_csnn_fused_equals_spikingjelly_path_outputs_and_gradients(monkeypatch, layout):
    use_kernels(monkeypatch, True)
    calls = kernel_calls(monkeypatch, fastpath.fire_pool._KERNELS)
    torch.manual_seed(5)
    fast = build_model(RunConfig(model="csnn", net={"channels": 8})).to(memory_format=layout)
    reference = build_model(RunConfig(model="csnn", net={"channels": 8}, backend="torch")).to(memory_format=layout)
    reference.load_state_dict(fast.state_dict())
    assert fast.conv2[0].weight.is_contiguous(memory_format=layout)
    images, labels = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    out, ref_out = fast(images), reference(images)
    assert torch.equal(out, ref_out)
    rate_loss(out, labels).backward()
    rate_loss(ref_out, labels).backward()
    for (name, p), q in zip(fast.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    fast.eval()
    reference.eval()
    with torch.inference_mode():
        assert torch.equal(fast(images), reference(images))
    assert calls == ["fire_pool_forward"] * 2 + ["fire_pool_backward"] * 2 + ["fire_pool_forward"] * 2


# ----------------------------------------------------------------------------- Poisson input


@pytest.mark.parametrize("kernels", [True, False])  # poisson.c, or the reference path: the dense encoder
def test_poisson_input_current_spikes_each_pixel_at_its_intensity(kernels, monkeypatch):
    """With an identity weight the current is each pixel's spike train: rates match intensities."""
    use_kernels(monkeypatch, kernels)
    calls = kernel_calls(monkeypatch, fastpath.poisson._KERNELS)
    torch.manual_seed(6)
    images = torch.rand(4, 100)
    images[:, :20] = 0.0
    images[:, 20:30] = 1.0
    T = 4000
    spikes = poisson_input_current(images, torch.eye(100), T)  # [T, N, 100]
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    rate = spikes.mean(0)
    assert torch.equal(rate[:, :20], torch.zeros(4, 20)) and torch.equal(rate[:, 20:30], torch.ones(4, 10))
    bound = 5 * torch.sqrt(images * (1 - images) / T) + 1e-6  # five standard deviations
    assert ((rate - images).abs() <= bound).all()
    # and steps are independent: the lag-1 autocorrelation of the spike trains is ~0
    centred = spikes[:, :, 30:] - images[:, 30:]
    lag1 = (centred[1:] * centred[:-1]).mean() / (images[:, 30:] * (1 - images[:, 30:])).mean()
    assert abs(lag1) < 5 / math.sqrt(T * 4 * 70)
    assert calls == (["poisson_current_forward"] if kernels else [])


@pytest.mark.parametrize("kernels", [True, False])
def test_poisson_input_current_keeps_each_image_its_own_pixels(kernels, monkeypatch):
    """Images of very different fractional-pixel counts (0 to 18, poisson.c takes them one after another):
    each image's current comes from its own pixels, in the batch's order, and the weight's gradient is
    the one of Linear over the spikes drawn."""
    use_kernels(monkeypatch, kernels)
    calls = kernel_calls(monkeypatch, fastpath.poisson._KERNELS)
    torch.manual_seed(5)
    n, p, T = 19, 64, 2000
    images = (torch.rand(n, p) < 0.3).float()  # binary pixels: 0 or 1, never drawn for
    for count, i in enumerate(torch.randperm(n).tolist()):  # counts 0..n-1 in a shuffled batch order
        images[i, torch.randperm(p)[:count]] = torch.rand(count) * 0.98 + 0.01
    weight = torch.eye(p, requires_grad=True)
    spikes = poisson_input_current(images, weight, T)  # identity weight: [T, N, P] spike trains
    rate = spikes.detach().mean(0)
    binary = (images == 0) | (images == 1)
    assert torch.equal(rate[binary], images[binary])
    bound = 5 * torch.sqrt(images * (1 - images) / T) + 1e-6
    assert ((rate - images).abs() <= bound).all()
    upstream = torch.randn(T, n, p)
    (grad,) = torch.autograd.grad((spikes * upstream).sum(), weight)
    expected = torch.einsum("tno,tnp->op", upstream, spikes.detach())
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-3)
    assert calls == (["poisson_current_forward", "poisson_current_backward"] if kernels else [])


@pytest.mark.parametrize("n", [1, 14])
def test_poisson_input_current_with_binary_images_and_one_fractional(n):
    """Images with no fractional pixel at all (nothing drawn for them) beside one that has some."""
    torch.manual_seed(4)
    images = (torch.rand(n, 30) < 0.4).float()
    images[-1, :5] = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])  # one image with fractional pixels, the rest binary
    spikes = poisson_input_current(images, torch.eye(30), 3000)
    rate = spikes.mean(0)
    assert torch.equal(rate[:-1], images[:-1]) and torch.equal(rate[-1, 5:], images[-1, 5:])
    assert ((rate[-1, :5] - images[-1, :5]).abs() < 0.05).all()


@pytest.mark.parametrize("kernels", [True, False])
def test_poisson_input_current_equals_the_dense_layer_on_binary_images(kernels, monkeypatch):
    """Binary images have no randomness: the current is exactly Linear(poisson_encode(...))."""
    use_kernels(monkeypatch, kernels)
    torch.manual_seed(7)
    images = (torch.rand(5, 784) < 0.3).float()
    weight = torch.randn(10, 784, requires_grad=True)
    current = poisson_input_current(images, weight, 3)
    dense = poisson_encode(images, 3) @ weight.t()
    torch.testing.assert_close(current, dense)
    (grad,) = torch.autograd.grad(current.square().sum(), weight)
    (dense_grad,) = torch.autograd.grad(dense.square().sum(), weight)
    torch.testing.assert_close(grad, dense_grad)


@pytest.mark.parametrize("kernels", [True, False])
def test_poisson_input_current_matches_the_dense_encoder_in_mean_and_variance(kernels, monkeypatch):
    use_kernels(monkeypatch, kernels)
    calls = kernel_calls(monkeypatch, fastpath.poisson._KERNELS)
    torch.manual_seed(8)
    images = torch.rand(3, 784) * (torch.rand(3, 784) < 0.25)
    weight = torch.randn(10, 784) * 0.1
    T = 3000
    fast = poisson_input_current(images, weight, T)
    dense = poisson_encode(images, T) @ weight.t()
    expected_mean = images @ weight.t()
    expected_var = (images * (1 - images)) @ weight.t().square()
    for current in (fast, dense):
        assert ((current.mean(0) - expected_mean).abs() <= 5 * (expected_var / T).sqrt()).all()
        assert ((current.var(0) / expected_var - 1).abs() < 0.15).all()
    assert calls == (["poisson_current_forward"] if kernels else [])


@pytest.mark.parametrize("function", ["poisson_current_forward", "poisson_current_backward"])
def test_the_poisson_kernel_out_of_memory_falls_back_to_the_reference_path(function, monkeypatch):
    """poisson.c reports that malloc failed: that call's current (or gradient) comes from the reference path, with
    one warning, and the reference path runs from then on."""
    use_kernels(monkeypatch, True)
    fail_allocations(monkeypatch, fastpath.poisson._KERNELS, function)
    torch.manual_seed(3)
    images = (torch.rand(6, 40) < 0.3).float()
    images[:, 30:] = 0.5
    weight = torch.eye(40, requires_grad=True)  # the current is the spike trains themselves
    T = 2000
    with pytest.warns(
        UserWarning, match="poisson.c could not allocate its scratch memory; running the reference path instead"
    ) as warned:
        spikes = poisson_input_current(images, weight, T)
        upstream = torch.randn(T, 6, 40)
        (grad,) = torch.autograd.grad((spikes * upstream).sum(), weight)
        poisson_input_current(images, weight, 3)  # the reference path, told once
    assert len(warned) == 1 and fastpath.poisson._KERNELS.get() is None
    rate = spikes.detach().mean(0)
    assert torch.equal(rate[:, :30], images[:, :30])
    assert ((rate[:, 30:] - 0.5).abs() <= 5 * math.sqrt(0.25 / T)).all()
    torch.testing.assert_close(grad, torch.einsum("tno,tnp->op", upstream, spikes.detach()), rtol=1e-4, atol=1e-3)


def test_fc_model_sparse_and_dense_inputs_agree_on_binary_images():
    torch.manual_seed(9)
    fast = fc_snn(T=20)
    reference = fc_snn(T=20)
    reference.load_state_dict(fast.state_dict())
    reference.fc.sparse = False
    set_fused(reference, False)
    images = (torch.rand(8, 1, 28, 28) < 0.2).float()
    torch.testing.assert_close(fast(images), reference(images))


def test_spike_thresholds_are_within_the_stated_bias_of_every_mnist_level():
    levels = torch.arange(256, dtype=torch.float32).div_(255.0)  # what snn.data hands the model
    p = (spike_thresholds(levels).long() + 32768).double() / 65536  # the probability a lane spikes
    bias = (p - torch.arange(256, dtype=torch.float64) / 255).abs()
    assert bias[:255].max() <= 127 / 255 / 65536 + 1e-12  # 7.6e-6, below 2^-17
    assert bias.max() <= 2.0**-16  # 255/255 is capped at 65535/65536 (the caller handles p = 1)
    assert p[0] == 0.0, "intensity 0 never spikes"
    anywhere = torch.rand(100_000)
    assert ((spike_thresholds(anywhere).long() + 32768) / 65536 - anywhere).abs().max() <= 2.0**-16


def test_uniform_lanes_are_uniform_and_the_lanes_of_one_draw_uncorrelated():
    torch.manual_seed(10)
    n = 250_000
    lanes = uniform_lanes((n, 4), "cpu").long() + 32768  # [64-bit draw, its four 16-bit lanes]
    u = (lanes.double() + 0.5) / 65536  # uniform on (0, 1)
    assert ((u.mean(0) - 0.5).abs() < 5 * math.sqrt(1 / 12 / n)).all()
    assert ((u.var(0) * 12 - 1).abs() < 0.02).all()
    counts = torch.bincount(lanes.flatten() >> 12, minlength=16).double()  # top 4 bits: 16 bins
    chi2 = ((counts - 4 * n / 16) ** 2 / (4 * n / 16)).sum()
    assert chi2 < 50  # 15 degrees of freedom: P(chi2 > 50) < 1e-5
    corr = torch.corrcoef(u.t())  # [4, 4]
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 5 / math.sqrt(n), corr
    # nor do the spikes that four lanes of one draw decide depend on each other
    spikes = (u < 0.3).double()
    both = (spikes[:, :, None] * spikes[:, None, :]).mean(0)[~torch.eye(4, dtype=torch.bool)]
    assert ((both - 0.09).abs() < 5 * math.sqrt(0.09 * 0.91 / n)).all()


def test_bernoulli_spikes_rate_and_independence_across_steps_and_pixels():
    torch.manual_seed(11)
    probs = torch.arange(256, dtype=torch.float32).div_(255.0).repeat(8)  # [2048] pixels, MNIST levels
    T = 2000
    spikes = bernoulli_spikes(spike_thresholds(probs), T)  # [2048, T]
    assert spikes.dtype == torch.float32 and set(spikes.unique().tolist()) <= {0.0, 1.0}
    rate = spikes.view(8, 256, T).mean(dim=(0, 2))  # [256 levels], each from 8 * T steps
    level = torch.arange(256, dtype=torch.float32) / 255
    assert ((rate - level).abs() <= 5 * (level * (1 - level) / (8 * T)).sqrt() + 1e-4).all()
    centred = spikes - probs.unsqueeze(1)
    variance = (probs * (1 - probs)).mean()
    # consecutive steps (often lanes of one 64-bit draw) and neighbouring pixels are uncorrelated
    lag1 = (centred[:, 1:] * centred[:, :-1]).mean() / variance
    neighbours = (centred[1:] * centred[:-1]).mean() / variance
    bound = 5 / math.sqrt(2048 * T)
    assert abs(lag1) < bound and abs(neighbours) < bound, (lag1, neighbours)


def test_the_poisson_draw_is_reproducible_from_the_seed():
    images = torch.rand(6, 784) * (torch.rand(6, 784) < 0.3)
    weight = torch.randn(10, 784)
    torch.manual_seed(12)
    first = poisson_input_current(images, weight, 50)
    torch.manual_seed(12)
    assert torch.equal(poisson_input_current(images, weight, 50), first)
    assert not torch.equal(poisson_input_current(images, weight, 50), first)  # the generator moved on


def test_uniform_lanes_are_reproducible_from_torchs_seed_and_independent_between_draws():
    """uniform_lanes (PCG64, seeded from torch's generator): reproducible under torch.manual_seed, and
    independent from one draw to the next."""
    torch.manual_seed(14)
    lanes = uniform_lanes((2000, 100), "cpu")
    torch.manual_seed(14)
    assert torch.equal(uniform_lanes((2000, 100), "cpu"), lanes)
    again = uniform_lanes((2000, 100), "cpu")
    assert not torch.equal(again, lanes)  # torch's generator moved on
    u = (torch.stack([lanes.flatten(), again.flatten()]).double() + 32768.5) / 65536
    assert abs(torch.corrcoef(u)[0, 1]) < 5 / math.sqrt(200_000)


def test_uniform_lanes_of_any_count():
    torch.manual_seed(13)
    lanes = uniform_lanes((3, 5, 7), "cpu")  # 105 lanes: not a multiple of four
    assert lanes.shape == (3, 5, 7) and lanes.dtype == torch.int16 and lanes.is_contiguous()


# ----------------------------------------------------------------------------- backends


@pytest.fixture
def restore_cuda_backend():
    saved = {var: os.environ.get(var) for _, var in fastpath.backends._SJ_OPS.values()}
    yield
    fastpath.select_cuda_backend("auto")
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def test_select_cuda_backend_sets_spikingjelly_dispatch(restore_cuda_backend):
    import spikingjelly._ops.if_ as sj_if
    import spikingjelly._ops.lif as sj_lif

    fastpath.select_cuda_backend("triton")
    assert sj_if._selection._requested == sj_lif._selection._requested == "triton"
    assert os.environ["SJ_LIF_CUDA_IMPLEMENTATION"] == "triton"
    with pytest.raises(ValueError, match="backend must be one of"):
        fastpath.select_cuda_backend("inductor")


def test_backend_is_a_validated_config_field():
    assert RunConfig().backend == "auto"
    with pytest.raises(ConfigError, match="backend: must be one of auto, torch, triton, cuda"):
        RunConfig(backend="cupy")
    with pytest.raises(ConfigError, match="backend: triton and cuda need device cuda"):
        RunConfig(backend="triton", device="cpu")
    with pytest.raises(ConfigError, match="backend: cuda runs on CUDA only"):
        use_backend("cuda", torch.device("cpu"))


def test_neuron_implementation_names_the_cpu_paths():
    assert fastpath.neuron_implementation("lif", "cpu") == "snn-fused-cpu"
    assert fastpath.neuron_implementation("lif", "cpu", "torch") == "spikingjelly-torch-reference"
    assert fastpath.neuron_implementation("plif", "cpu") == "spikingjelly-torch-reference"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cuda_training_step_with_amp_runs_spikingjelly_kernels(backend, restore_cuda_backend):
    config = RunConfig(model="csnn", net={"channels": 8, "T": 2}, device="cuda", amp=True, backend=backend)
    use_backend(config.backend, torch.device("cuda"))
    model = build_model(config).cuda()
    images, labels = torch.rand(4, 1, 28, 28, device="cuda"), torch.randint(0, 10, (4,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(images).float()
    rate_loss(out, labels).backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())


# ----------------------------------------------------------------------------- end to end


def _synthetic(n: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 1, 28, 28, generator=g) * 300).clamp(max=255).to(torch.uint8)
    return Dataset(Split(images, torch.randint(0, 10, (n,), generator=g)), Split(images[:64], torch.arange(64) % 10))


def test_same_seed_same_metrics_with_the_fast_paths():
    data = _synthetic(256)
    for model in ("fc", "csnn"):
        net = {"T": 4, "channels": 4} if model == "csnn" else {"T": 4}
        config = RunConfig(model=model, net=net, epochs=1, device="cpu", seed=3)
        first, second = train(config, data), train(config, data)
        keep = ("train_loss", "train_acc", "test_loss", "test_acc")
        assert [{k: r[k] for k in keep} for r in first.epochs] == [{k: r[k] for k in keep} for r in second.epochs]


def test_fc_accuracy_after_one_epoch_matches_the_reference_path(mnist):
    """5,000 real training images, 2,000 test images: fast path and spikingjelly/dense path alike."""
    data = make_splits(mnist, limit_train=5000, limit_test=2000)
    accuracy = {}
    for backend in ("auto", "torch"):
        config = RunConfig(model="fc", net={"T": 20}, epochs=1, device="cpu", backend=backend)  # T=20 keeps it fast
        accuracy[backend] = train(config, data).last("test_acc")
    assert accuracy["auto"] > 0.65 and accuracy["torch"] > 0.65  # measured: 0.7115 and 0.7140 (chance 0.1)
    # two runs with different Poisson draws: 2,000 test images give a standard error of ~0.7 points
    assert abs(accuracy["auto"] - accuracy["torch"]) < 0.03, accuracy
