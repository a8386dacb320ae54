"""The networks' neuron layers follow spikingjelly's LIF and IF equations on hand-made inputs.

Charge:  LIF  H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau      IF  H[t] = V[t-1] + X[t]
Fire:    S[t] = 1 if H[t] >= V_threshold (1.0) else 0
Reset:   V[t] = V_reset (0.0) if S[t] else H[t]     (hard reset)
"""

from __future__ import annotations

import math

import pytest
import torch
from spikingjelly.activation_based import functional, neuron

from snn.config import RunConfig
from snn.models import csnn, fc_snn, spiking_layers
from snn.networks import build_model

# LIF, tau = 2: worked by hand from the equations above.
LIF_INPUT = [2.0, 1.0, 1.0, 1.0, 0.0, 4.0, -2.0, 1.5]
LIF_SPIKES = [1, 0, 0, 0, 0, 1, 0, 0]
LIF_V = [0.0, 0.5, 0.75, 0.875, 0.4375, 0.0, -1.0, 0.25]  # after reset
# t1 H = 0 + 2/2 = 1 -> fires (H == threshold fires); t2 H = 1/2; t3 .5 + .5/2; t4 .75 + .25/2;
# t5 .875 - .875/2; t6 .4375 + 3.5625/2 = 2.21875 -> fires; t7 -2/2; t8 -1 + 2.5/2

# IF: H = V + X.
IF_INPUT = [0.5, 0.5, 0.25, 0.875, -0.5, 3.0, 0.0, 0.75]
IF_SPIKES = [0, 1, 0, 1, 0, 1, 0, 0]
IF_V = [0.5, 0.0, 0.25, 0.0, -0.5, 0.0, 0.0, 0.75]  # t4 H = 1.125 -> fires and resets to 0, not to 0.125


def reference_trace(x: list[float], tau: float | None) -> tuple[list[float], list[float]]:
    """Spikes and post-reset membrane potentials of one neuron, straight from the equations."""
    v, spikes, vs = 0.0, [], []
    for xt in x:
        h = v + xt if tau is None else v + (xt - (v - 0.0)) / tau
        s = 1.0 if h >= 1.0 else 0.0
        v = 0.0 if s else h
        spikes.append(s)
        vs.append(v)
    return spikes, vs


def run_multistep(layer, x: list[float], requires_grad: bool = False) -> tuple[list[float], list[float]]:
    """Drive a multi-step layer, as the model does, with x[t] ([T, 1, 1]); its spikes and membrane trace.

    The membrane after step t is the layer's state after a run on x[:t + 1] (reading it this way,
    not with ``store_v_seq``, keeps the layer on the path the model takes, fused or not).
    """

    def run(steps: list[float]) -> torch.Tensor:
        functional.reset_net(layer)
        return layer(torch.tensor(steps).view(len(steps), 1, 1).requires_grad_(requires_grad))

    spikes = run(x).detach().flatten().tolist()
    vs = []
    for t in range(len(x)):
        run(x[: t + 1])
        vs.append(float(layer.v.detach().flatten()[0]))
    functional.reset_net(layer)
    return spikes, vs


def run_single_step_reference(layer, x: list[float]) -> tuple[list[float], list[float]]:
    """spikingjelly's single-step neuron stepped through x; its spikes and membrane trace."""
    spikes, vs = [], []
    for xt in x:
        spikes.append(layer(torch.tensor([xt])).item())
        vs.append(layer.v.item())
    return spikes, vs


def test_the_hand_worked_traces_follow_the_equations():
    assert reference_trace(LIF_INPUT, tau=2.0) == (LIF_SPIKES, LIF_V)
    assert reference_trace(IF_INPUT, tau=None) == (IF_SPIKES, IF_V)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fc_lif_layer_matches_the_hand_worked_trace(mode, requires_grad):
    layer = getattr(fc_snn(T=8, tau=2.0).sn, mode)()
    assert (layer.v_threshold, layer.v_reset, layer.decay_input, layer.detach_reset) == (1.0, 0.0, True, False)
    assert run_multistep(layer, LIF_INPUT, requires_grad) == (LIF_SPIKES, LIF_V)
    assert run_single_step_reference(neuron.LIFNode(tau=2.0, step_mode="s"), LIF_INPUT) == (LIF_SPIKES, LIF_V)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_csnn_if_layers_match_the_hand_worked_trace(mode, requires_grad):
    net = getattr(csnn(T=8, channels=2), mode)()
    for name, layer in spiking_layers(net).items():
        assert (layer.v_threshold, layer.v_reset, layer.detach_reset) == (1.0, 0.0, False), name
        assert run_multistep(layer, IF_INPUT, requires_grad) == (IF_SPIKES, IF_V), name
    assert run_single_step_reference(neuron.IFNode(step_mode="s"), IF_INPUT) == (IF_SPIKES, IF_V)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("tau", [1.5, 2.0, 3.0, 10.0])
def test_lif_layers_agree_with_spikingjelly_and_the_equations_on_random_input(tau, backend):
    x = (torch.rand(30, generator=torch.Generator().manual_seed(0)) * 3 - 0.5).tolist()
    expected_spikes, expected_v = reference_trace(x, tau)
    for model in ("fc", "csnn"):
        net_params = {"neuron": "lif", "tau": tau, "T": 2, **({"channels": 2} if model == "csnn" else {})}
        net = build_model(RunConfig(model=model, net=net_params, backend=backend))
        for name, layer in spiking_layers(net).items():
            spikes, vs = run_multistep(layer, x)
            assert spikes == expected_spikes, (model, name)
            assert vs == pytest.approx(expected_v, abs=1e-5), (model, name)
    ref_spikes, ref_v = run_single_step_reference(neuron.LIFNode(tau=tau, step_mode="s"), x)
    assert ref_spikes == expected_spikes
    assert ref_v == pytest.approx(expected_v, abs=1e-5)
    assert 0 < sum(expected_spikes) < len(x), "the input exercises both firing and integrating"


def test_if_layers_agree_with_spikingjelly_and_the_equations_on_random_input():
    x = (torch.rand(30, generator=torch.Generator().manual_seed(1)) * 1.5 - 0.25).tolist()
    expected = reference_trace(x, tau=None)
    for backend in ("auto", "torch"):
        net = build_model(RunConfig(model="csnn", net={"neuron": "if", "T": 2, "channels": 2}, backend=backend))
        for name, layer in spiking_layers(net).items():
            spikes, vs = run_multistep(layer, x, requires_grad=True)
            assert spikes == expected[0], (backend, name)
            assert vs == pytest.approx(expected[1], abs=1e-5), (backend, name)
    ref_spikes, ref_v = run_single_step_reference(neuron.IFNode(step_mode="s"), x)
    assert ref_spikes == expected[0] and ref_v == pytest.approx(expected[1], abs=1e-5)


def test_plif_at_its_initial_tau_behaves_as_lif():
    net = build_model(RunConfig(model="csnn", net={"neuron": "plif", "tau": 2.0, "T": 2, "channels": 2}))
    assert run_multistep(net.sn1, LIF_INPUT) == (LIF_SPIKES, LIF_V)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("h", [0.2, 0.8, 1.0, 1.3])
def test_spike_gradient_is_the_atan_surrogate(h, backend):
    """One IF step: S = Heaviside(X - 1), dS/dX = alpha / 2 / (1 + (pi / 2 * alpha * (X - 1))^2), alpha 2."""
    layer = build_model(RunConfig(model="csnn", net={"T": 1, "channels": 2}, backend=backend)).sn1
    functional.reset_net(layer)
    x = torch.tensor([[h]], requires_grad=True)  # [T=1, N=1]
    layer(x).sum().backward()
    alpha = 2.0
    expected = alpha / 2 / (1 + (math.pi / 2 * alpha * (h - 1)) ** 2)
    assert x.grad.item() == pytest.approx(expected, rel=1e-5)
