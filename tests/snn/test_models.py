"""The two seed networks and their families: output shapes and ranges, surrogate gradients to every weight,
config wiring, encoding."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from spikingjelly.activation_based import neuron, surrogate

from snn.config import RunConfig
from snn.layers import PoissonLinear, poisson_encode
from snn.models import CSNN, FCSNN, csnn, fc_snn, spiking_layers
from snn.networks import build_model
from snn.spikes import record_firing_rates
from snn.training import rate_loss

SMALL = {"fc": dict(T=8), "csnn": dict(T=3, channels=4)}


def small_model(model: str, **changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(RunConfig(model=model, net={**SMALL[model], **changes}))


def random_images(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # [N, 1, 28, 28] in [0, 1)


@pytest.mark.parametrize("model", ["fc", "csnn"])
@pytest.mark.parametrize("neuron_kind", ["lif", "if", "plif"])
def test_output_is_a_firing_rate_per_class(model, neuron_kind):
    net = small_model(model, neuron=neuron_kind, tau=2.0)
    T = SMALL[model]["T"]
    rates = net(random_images())
    assert rates.shape == (6, 10)
    assert rates.dtype == torch.float32
    assert rates.min() >= 0 and rates.max() <= 1
    # a rate over T steps is a whole number of spikes divided by T
    assert torch.allclose(rates * T, (rates * T).round(), atol=1e-5)


def test_fc_with_a_blank_image_never_spikes():
    net = small_model("fc")
    assert net(torch.zeros(3, 1, 28, 28)).sum() == 0


def test_fc_with_white_images_and_large_weights_fires_every_step():
    net = small_model("fc")
    with torch.no_grad():
        net.fc.weight.fill_(1.0)
    assert torch.equal(net(torch.ones(2, 1, 28, 28)), torch.ones(2, 10))


@pytest.mark.parametrize("model", ["fc", "csnn"])
def test_forward_resets_the_neurons_so_repeated_calls_agree(model):
    net = small_model(model).train()
    if model == "fc":
        with torch.no_grad():
            net.fc.weight.fill_(0.003)  # about one threshold's worth of input per two steps: state matters
    images = random_images()
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        with torch.no_grad(), record_firing_rates(net) as rates:
            out = net(images)
        runs.append((out, rates))
    (first, first_rates), (second, second_rates) = runs
    assert torch.equal(first, second)
    assert first_rates == second_rates
    assert 0 < first_rates["sn" if model == "fc" else "sn1"] < 1, "the neurons integrate and fire"


@pytest.mark.parametrize(
    ("model", "neuron_kind", "surrogate_name"),
    [
        ("fc", "lif", "atan"),
        ("fc", "if", "atan"),
        ("fc", "plif", "sigmoid"),
        ("csnn", "if", "atan"),
        ("csnn", "if", "sigmoid"),
    ],
)
def test_gradients_reach_every_parameter_through_the_surrogate(model, neuron_kind, surrogate_name):
    net = small_model(model, neuron=neuron_kind, surrogate=surrogate_name).train()
    loss = rate_loss(net(random_images(8)), torch.arange(8) % 10)
    loss.backward()
    named = dict(net.named_parameters())
    assert len(named) == {"fc": 1, "csnn": 8}[model] + (neuron_kind == "plif") * {"fc": 1, "csnn": 4}[model]
    for name, p in named.items():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


def test_csnn_with_plif_gets_gradients_up_to_its_first_silent_layer():
    """At init the LIF/PLIF CSNN's third layer stays silent at T=4, so fc2 (fed by it) and sn4 (fed by
    fc2) get exactly zero gradient; every parameter before it, PLIF time constants included, gets one."""
    net = small_model("csnn", neuron="plif", T=4).train()
    with record_firing_rates(net) as rates:
        loss = rate_loss(net(random_images(8)), torch.arange(8) % 10)
    loss.backward()
    assert rates["sn3"] == 0.0
    fed_by_silence = {"fc2.weight", "sn4.w"}
    for name, p in net.named_parameters():
        if name in fed_by_silence:
            assert p.grad is None or p.grad.abs().sum() == 0, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"


def test_fc_architecture_is_the_seeds():
    net = build_model(RunConfig(model="fc"))
    assert isinstance(net, FCSNN)
    assert isinstance(net.fc, PoissonLinear) and net.fc.T == 100 and net.fc.sparse
    assert tuple(net.fc.weight.shape) == (10, 784) and net.fc.bias is None
    assert sorted(spiking_layers(net)) == ["sn"]
    assert isinstance(net.sn, neuron.LIFNode) and net.sn.tau == 2.0
    assert net.T == 100
    assert sum(p.numel() for p in net.parameters()) == 7840


@pytest.mark.parametrize("channels", [4, 64])
def test_csnn_architecture_is_the_seeds(channels):
    net = build_model(RunConfig(model="csnn", net={"channels": channels}))
    assert isinstance(net, CSNN) and net.T == 4
    conv1, conv2 = net.encoder[0], net.conv2[0]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.padding) == (1, channels, (3, 3), (1, 1))
    assert (conv2.in_channels, conv2.out_channels) == (channels, channels)
    assert tuple(net.fc1.weight.shape) == (channels * 16, channels * 49)
    assert tuple(net.fc2.weight.shape) == (10, channels * 16)
    layers = spiking_layers(net)
    assert sorted(layers) == ["sn1", "sn2", "sn3", "sn4"]
    assert all(isinstance(m, neuron.IFNode) for m in layers.values())


@pytest.mark.parametrize("in_channels", [1, 3])
def test_the_csnn_runs_channels_last_and_each_block_computes_what_nchw_computes(in_channels):
    """channels_last is a speed path (oneDNN's convolutions, training and inference): every convolution's
    current is channels_last, also for 1-channel images (where converting the image changes nothing), and
    each Conv-BN gives an NCHW copy's current and gradients to float rounding (sums in another order)."""
    torch.manual_seed(0)
    net = build_model(RunConfig(model="csnn", net={"channels": 8, "blocks": 3}), (in_channels, 32, 32), 10)
    nchw = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    blocks = ["encoder", "conv2", "conv3"]
    inputs, outputs = {}, {}
    for name in blocks:

        def keep(module, args, out, name=name):
            inputs[name], outputs[name] = args[0].detach(), out

        getattr(net, name).register_forward_hook(keep)
    images = torch.rand(4, in_channels, 32, 32, generator=torch.Generator().manual_seed(1))
    for grad_mode in (True, False):
        with torch.set_grad_enabled(grad_mode):
            net(images)
        for name in blocks:
            current = outputs[name].flatten(0, 1) if name != "encoder" else outputs[name]
            assert current.is_contiguous(memory_format=torch.channels_last) and not current.is_contiguous(), name
    net.train(), nchw.train()
    for name in blocks:
        x = inputs[name].contiguous()
        fast_in, ref_in = x.clone().requires_grad_(name != "encoder"), x.clone().requires_grad_(name != "encoder")
        fast_out, ref_out = getattr(net, name)(fast_in), getattr(nchw, name)(ref_in)
        assert ref_out.is_contiguous()
        torch.testing.assert_close(fast_out, ref_out, rtol=1e-5, atol=1e-5, msg=name)
        grad = torch.randn(ref_out.shape, generator=torch.Generator().manual_seed(2))
        fast_out.backward(grad)
        ref_out.backward(grad)
        if name != "encoder":
            scale = ref_in.grad.abs().max().item()
            torch.testing.assert_close(fast_in.grad, ref_in.grad, rtol=1e-5, atol=1e-5 * scale, msg=name)
        for p, q in zip(getattr(net, name).parameters(), getattr(nchw, name).parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5 * q.grad.abs().max().item(), msg=name)


@pytest.mark.parametrize("model", ["fc", "csnn"])
def test_config_reaches_every_neuron_layer(model):
    net = small_model(model, neuron="lif", tau=3.5, surrogate="sigmoid", surrogate_alpha=6.0)
    for name, layer in spiking_layers(net).items():
        assert isinstance(layer, neuron.LIFNode), name
        assert layer.tau == 3.5, name
        assert layer.step_mode == "m", name
        assert isinstance(layer.surrogate_function, surrogate.Sigmoid), name
        assert layer.surrogate_function.alpha == 6.0, name


def test_plif_starts_at_the_configured_tau():
    net = small_model("csnn", neuron="plif", tau=4.0)
    for name, layer in spiking_layers(net).items():
        assert isinstance(layer, neuron.ParametricLIFNode), name
        assert math.isclose(1 / torch.sigmoid(layer.w).item(), 4.0, rel_tol=1e-6), name


def test_unset_surrogate_alpha_keeps_spikingjellys_default():
    net = small_model("fc", surrogate="atan")
    assert net.sn.surrogate_function.alpha == surrogate.ATan().alpha


@pytest.mark.parametrize("model", ["fc", "csnn"])
def test_recorded_firing_rates_cover_every_spiking_layer(model):
    net = small_model(model).eval()
    with torch.no_grad(), record_firing_rates(net) as rates:
        out = net(random_images())
    assert sorted(rates) == sorted(spiking_layers(net))
    assert all(0.0 <= r <= 1.0 for r in rates.values())
    output_layer = "sn" if model == "fc" else "sn4"
    assert rates[output_layer] == pytest.approx(out.mean().item(), abs=1e-6)
    if model == "csnn":
        assert rates["sn1"] > 0, "the encoder layer fires at init"


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_fc_encodes_pixels_as_poisson_spikes_inside_forward(backend):
    """Wire output neuron o to pixel o alone (weight 1), so its input current is that pixel's spike train."""
    T = 400
    net = build_model(RunConfig(model="fc", net={"T": T}, backend=backend))
    assert net.fc.sparse == (backend != "torch")
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.weight[torch.arange(10), torch.arange(10)] = 1.0
    seen = []
    net.sn.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    images = random_images(4)
    images.view(4, -1)[:, :10] = torch.tensor([0.0, 0.05, 0.1, 0.25, 0.5, 0.6, 0.75, 0.9, 0.97, 1.0])
    torch.manual_seed(3)
    net(images)
    (current,) = seen
    assert current.shape == (T, 4, 10)  # [T, N, 10]
    assert set(current.unique().tolist()) <= {0.0, 1.0}, "each current is one pixel's spikes"
    p = images.flatten(1)[:, :10]  # [N, 10]
    rate = current.mean(0)
    sigma = (p * (1 - p) / T).sqrt()
    assert ((rate - p).abs() <= 5 * sigma + 1e-6).all(), (rate, p)
    assert (rate[:, 0] == 0).all() and (rate[:, 9] == 1).all()
    # the encoding is redrawn each call: a second forward sees different spikes
    net(images)
    assert not torch.equal(seen[0], seen[1])


def test_poisson_encode_shape_and_values():
    images = random_images(3)
    spikes = poisson_encode(images, T=7)
    assert spikes.shape == (7, 3, 1, 28, 28)
    assert spikes.dtype == images.dtype
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}


def test_the_factories_defaults_are_the_seed_networks_build_model_gives():
    for factory, model in ((fc_snn, "fc"), (csnn, "csnn")):
        torch.manual_seed(0)
        direct = factory()
        torch.manual_seed(0)
        built = build_model(RunConfig(model=model))
        assert type(direct) is type(built)
        assert str(direct) == str(built)
        assert direct.state_dict().keys() == built.state_dict().keys()
        assert all(torch.equal(v, built.state_dict()[k]) for k, v in direct.state_dict().items()), model


def test_fc_hidden_layers_are_named_and_sized_from_the_input_to_the_output():
    net = fc_snn(T=2, hidden_layers=2, width_1=5, width_2=6, width_3=99)  # width_3 unused: two hidden layers
    assert list(spiking_layers(net)) == ["sn1", "sn2", "sn"]
    assert isinstance(net.fc1, PoissonLinear) and tuple(net.fc1.weight.shape) == (5, 784)
    assert not isinstance(net.fc2, PoissonLinear) and tuple(net.fc2.weight.shape) == (6, 5)
    assert tuple(net.fc.weight.shape) == (10, 6)
    assert not hasattr(net, "fc3")
    assert net(random_images(3)).shape == (3, 10)


def test_fc_direct_encoding_presents_the_analog_image_at_every_step():
    """No Poisson noise: the first layer's current is the same at each step, and so the output is deterministic."""
    net = fc_snn(T=6, encoding="direct")
    assert type(net.fc) is torch.nn.Linear
    seen = []
    net.sn.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    images = random_images(2)
    torch.manual_seed(1)
    first = net(images)
    torch.manual_seed(2)
    assert torch.equal(net(images), first)
    current = seen[0]  # [T, N, 10]
    assert current.shape == (6, 2, 10)
    assert torch.equal(current, net.fc(images.flatten(1)).expand(6, 2, 10))


def test_csnn_blocks_channels_fc_width_and_dropout_make_the_layers_named_in_order():
    net = csnn(T=2, blocks=3, channels_1=2, channels_2=3, channels_3=4, fc_width=7, dropout=0.25, kernel_size=5)
    names = [name for name, _ in net.named_children()]
    assert names == [
        "encoder",
        "sn1",
        "pool1",
        "conv2",
        "sn2",
        "pool2",
        "conv3",
        "sn3",
        "pool3",
        "flatten",
        "drop1",
        "fc1",
        "sn4",
        "drop2",
        "fc2",
        "sn5",
    ]
    assert [net.encoder[0].out_channels, net.conv2[0].out_channels, net.conv3[0].out_channels] == [2, 3, 4]
    assert net.encoder[0].kernel_size == (5, 5) and net.encoder[0].padding == (2, 2)
    assert tuple(net.fc1.weight.shape) == (7, 4 * 3 * 3)  # 28 -> 14 -> 7 -> 3
    assert tuple(net.fc2.weight.shape) == (10, 7)
    assert net.drop1.p == net.drop2.p == 0.25
    assert net.train()(random_images(3)).shape == (3, 10)
    one = csnn(T=2, blocks=1, channels=3)
    assert [name for name, _ in one.named_children()] == [
        "encoder",
        "sn1",
        "pool1",
        "flatten",
        "fc1",
        "sn2",
        "fc2",
        "sn3",
    ]
    assert tuple(one.fc1.weight.shape) == (3 * 16, 3 * 14 * 14)


@pytest.mark.parametrize(
    ("model", "shapes"),
    [
        ("fc", {"fc.weight": (4, 3 * 32 * 32)}),
        ("csnn", {"encoder.0.weight": (4, 3, 3, 3), "fc1.weight": (4 * 16, 4 * 8 * 8), "fc2.weight": (4, 4 * 16)}),
    ],
)
def test_the_networks_take_the_datas_image_shape_and_classes(model, shapes):
    net = build_model(RunConfig(model=model, net=SMALL[model]), input_shape=(3, 32, 32), classes=4)
    weights = dict(net.named_parameters())
    assert {name: tuple(weights[name].shape) for name in shapes} == shapes
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert net(images).shape == (5, 4)
