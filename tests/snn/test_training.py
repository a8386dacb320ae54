"""The trainer and the evaluator: learning (on real MNIST), metrics, determinism and divergence (on any data)."""

from __future__ import annotations

import math

import pytest
import torch
from spikingjelly.activation_based import functional, neuron

import snn.models
import snn.networks
import snn.training
from snn.config import ConfigError, RunConfig
from snn.data import Dataset, as_dataset, make_splits, read_dataset
from snn.models import spiking_layers
from snn.networks import build_model
from snn.training import LOSSES, History, SilenceRule, cross_entropy_loss, evaluate, predict, rate_loss, train

TIMING = {"epoch_seconds", "train_seconds", "eval_seconds", "train_images_per_s"}


def tiny_fc(T: int = 5, **changes) -> RunConfig:
    """A small CPU run: fc, or csnn of 4 channels, at T steps."""
    net = {"T": T, "channels": 4} if changes.get("model") == "csnn" else {"T": T}
    return RunConfig(
        **{"model": "fc", "net": net, "epochs": 2, "limit_train": 500, "limit_test": 200, "device": "cpu", **changes}
    )


def subset(dataset: Dataset, config: RunConfig) -> Dataset:
    return make_splits(
        dataset, val_size=config.val_size, limit_train=config.limit_train, limit_test=config.limit_test, device="cpu"
    )


def without_timing(history: History) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history.epochs]


def test_fc_learns_well_above_chance(mnist):
    """Measured: 73% test accuracy after 2 epochs (seeds 0-3: 71.7-73.4%); chance is about 10%."""
    config = RunConfig(model="fc", net={"T": 20}, epochs=2, limit_train=3_000, limit_test=2_000, device="cpu")
    history = train(config, subset(mnist, config))
    assert history.status == "completed"
    assert [r["epoch"] for r in history.epochs] == [1, 2]
    assert history.last("test_acc") > 0.6
    assert history.last("train_loss") < history.epochs[0]["train_loss"]
    record = history.epochs[-1]
    for key in (
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "epoch_seconds",
        "train_images_per_s",
        "rate_sn",
        "lr",
    ):
        assert key in record, key
    assert 0 < record["rate_sn"] < 1
    assert record["train_images_per_s"] > 0 and record["lr"] == 1e-3


def test_csnn_learns_above_chance(mnist):
    """Measured: 43% test accuracy after one epoch of 2,000 images at C=8, T=4 with Adam 1e-3."""
    config = RunConfig(
        model="csnn",
        net={"T": 4, "channels": 8},
        optimizer="adam",
        lr=1e-3,
        epochs=1,
        limit_train=2_000,
        limit_test=1_000,
        device="cpu",
    )
    history = train(config, subset(mnist, config))
    assert history.status == "completed"
    assert history.last("test_acc") > 0.25
    assert set(history.epochs[0]) >= {"rate_sn1", "rate_sn2", "rate_sn3", "rate_sn4"}


def test_fc_learns_the_synthetic_digits_the_mechanics_tests_use(synthetic_root):
    """Measured: 90% test accuracy after 2 epochs (seeds 0-2: 89.8-90.2%), so a run on them shows learning."""
    config = RunConfig(model="fc", net={"T": 20}, epochs=2, limit_train=3_000, limit_test=2_000, device="cpu")
    history = train(config, subset(read_dataset(synthetic_root, download=False), config))
    assert history.last("test_acc") > 0.8


def test_validation_metrics_are_reported_when_a_split_is_held_out(dataset):
    config = tiny_fc(epochs=1, val_size=300)
    data = subset(dataset, config)
    assert len(data.val) == 300
    record = train(config, data).epochs[0]
    assert 0 <= record["val_acc"] <= 1 and math.isfinite(record["val_loss"])


def test_the_same_seed_gives_the_same_metrics(dataset):
    config = tiny_fc()
    first, second = train(config, subset(dataset, config)), train(config, subset(dataset, config))
    assert without_timing(first) == without_timing(second)
    other = train(config.replace(seed=1), subset(dataset, config))
    assert without_timing(other) != without_timing(first)


def test_augment_shift_moves_every_training_batch_and_never_an_evaluated_one(dataset, monkeypatch):
    config = tiny_fc().replace(epochs=1)
    data = subset(dataset, config)
    training_batches = math.ceil(len(data.train) / config.batch_size)
    inputs: list[list[torch.Tensor]] = []
    build = snn.training.build_model

    def watched(*args, **kwargs):
        model, seen = build(*args, **kwargs), []
        model.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
        inputs.append(seen)
        return model

    monkeypatch.setattr(snn.training, "build_model", watched)
    train(config, data)
    train(config.replace(augment_shift=2), data)  # the same seed: the same first epoch's batches, then moved
    plain, shifted = inputs
    assert len(plain) == len(shifted) > training_batches
    assert not any(torch.equal(a, b) for a, b in zip(plain[:training_batches], shifted[:training_batches]))
    assert all(torch.equal(a, b) for a, b in zip(plain[training_batches:], shifted[training_batches:]))


def test_on_epoch_and_on_batch_are_called(dataset):
    config = tiny_fc(batch_size=128)
    epochs, calls = [], []
    history = train(
        config,
        subset(dataset, config),
        on_epoch=lambda record, state: epochs.append((record["epoch"], state.history.status)),
        on_batch=lambda i, n, loss: calls.append((i, n)),
    )
    assert epochs == [(1, "running"), (2, "completed")]
    assert calls == [(i, 4) for i in range(4)] * 2  # 500 images in batches of 128
    assert history.status == "completed"


def test_a_nan_loss_stops_the_run_as_diverged(dataset, monkeypatch):
    monkeypatch.setitem(snn.training.LOSSES, "mse", lambda rates, labels: (rates * math.nan).sum())
    config = tiny_fc(epochs=3)
    seen = []
    history = train(config, subset(dataset, config), on_epoch=lambda record, state: seen.append(state.history.status))
    assert history.status == "diverged"
    assert len(history.epochs) == 1 and seen == ["diverged"]
    assert math.isnan(history.epochs[0]["train_loss"])
    assert "test_acc" not in history.epochs[0], "no evaluation of a diverged model"


@pytest.mark.parametrize("model", ["fc", "csnn"])
def test_weights_gone_nan_stop_the_run_although_the_loss_stays_finite(dataset, monkeypatch, model):
    """An infinite step turns every weight NaN; a NaN membrane never fires, so the rates and the
    loss stay finite (0.1), and only the weights show that the run diverged."""
    monkeypatch.setattr(snn.training, "make_optimizer", lambda config, params: torch.optim.SGD(params, lr=math.inf))
    config = tiny_fc(epochs=3, model=model, T=2)
    history = train(config, subset(dataset, config))
    assert history.status == "diverged"
    assert len(history.epochs) == 1
    assert math.isfinite(history.epochs[0]["train_loss"])


def test_evaluate_reports_loss_accuracy_and_rates_consistent_with_predict(dataset):
    torch.manual_seed(0)
    config = RunConfig(model="csnn", net={"T": 4, "channels": 4}, device="cpu")
    model = build_model(config)
    split = make_splits(dataset, limit_test=300).test
    images = split.float_images(slice(None))
    with torch.no_grad():  # BN statistics of these images, and weights large enough that every layer fires
        for bn in (model.encoder[1], model.conv2[1]):
            bn.momentum = None
        model.train()(images)
        model.fc1.weight.mul_(4)
        model.fc2.weight.mul_(4)
    result = evaluate(model, split, config, batch_size=64)
    assert not model.training
    predicted = predict(model, images)
    assert result["acc"] == pytest.approx((predicted == split.labels).float().mean().item())
    assert result["loss"] == pytest.approx(rate_loss(model(images), split.labels).item(), rel=1e-5)
    assert result["loss"] != pytest.approx(0.1), "the output fires, so the loss is not that of silence"
    assert sorted(result["rates"]) == ["sn1", "sn2", "sn3", "sn4"]
    assert all(0 < r < 1 for r in result["rates"].values())
    whole = evaluate(model, split, config, batch_size=1000)  # the batch size changes nothing in eval mode
    assert whole["acc"] == result["acc"] and whole["loss"] == pytest.approx(result["loss"], rel=1e-5)
    assert whole["rates"] == pytest.approx(result["rates"])


def test_cosine_schedule_anneals_the_learning_rate(dataset):
    config = tiny_fc(epochs=3, lr_schedule="cosine", lr=0.01, limit_train=256)
    lrs = [r["lr"] for r in train(config, subset(dataset, config)).epochs]
    assert lrs[0] == 0.01
    assert lrs == pytest.approx([0.01 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)])


ACTIVITY_KEYS = (
    "spikes_per_image",
    "input_spikes_per_image",
    "synops_per_image",
    "encoder_macs_per_image",
    "dense_macs_per_image",
    "energy_estimate_uj",
)


@pytest.mark.parametrize(
    "model, spiking, synaptic",
    [("fc", ["sn"], ["fc"]), ("csnn", ["sn1", "sn2", "sn3", "sn4"], ["conv2", "fc1", "fc2"])],
)
def test_the_epoch_record_carries_spikes_synops_and_energy_of_test_and_val(dataset, model, spiking, synaptic):
    config = tiny_fc(model=model, T=3, epochs=1, val_size=200, limit_train=256)
    record = train(config, subset(dataset, config)).epochs[0]
    for split in ("test", "val"):
        expected = [*ACTIVITY_KEYS, *(f"spikes_{s}" for s in spiking), *(f"synops_{s}" for s in synaptic)]
        for key in expected:
            assert isinstance(record[f"{split}_{key}"], float), (split, key)
        assert record[f"{split}_spikes_per_image"] == pytest.approx(sum(record[f"{split}_spikes_{s}"] for s in spiking))
        assert record[f"{split}_synops_per_image"] == pytest.approx(
            sum(record[f"{split}_synops_{s}"] for s in synaptic)
        )
        assert record[f"{split}_energy_estimate_uj"] == pytest.approx(
            0.9e-6 * record[f"{split}_synops_per_image"] + 4.6e-6 * record[f"{split}_encoder_macs_per_image"]
        )
    dense = 784 * 10 * 3 if model == "fc" else 3 * (28 * 28 * 4 * 9 + 14 * 14 * 4 * 4 * 9 + 196 * 64 + 64 * 10)
    assert record["test_dense_macs_per_image"] == dense
    if model == "fc":  # Poisson input: 3 steps x the mean summed intensity of the test images
        images = subset(dataset, config).test.float_images(slice(None))
        assert record["test_input_spikes_per_image"] == pytest.approx(3 * images.sum().item() / len(images), rel=1e-6)
        assert record["test_synops_fc"] == pytest.approx(10 * record["test_input_spikes_per_image"])
    else:
        assert record["test_encoder_macs_per_image"] == 28 * 28 * 4 * 9


def test_evaluate_spikes_agree_with_the_firing_rates(dataset):
    config = RunConfig(model="fc", net={"T": 10}, device="cpu")
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.fc.weight.mul_(30)  # fires at init
    result = evaluate(model, make_splits(dataset, limit_test=300).test, config)
    assert 0 < result["rates"]["sn"] < 1
    assert result["activity"]["spikes_sn"] == pytest.approx(result["rates"]["sn"] * 10 * 10)  # T x 10 neurons


def deaf(monkeypatch) -> None:
    """Every model train builds gets thresholds no input reaches: it never fires."""

    def build_deaf_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        for m in spiking_layers(model).values():
            m.v_threshold = 1e9
        return model

    monkeypatch.setattr(snn.training, "build_model", build_deaf_model)


@pytest.mark.parametrize("model", ["fc", "csnn"])
def test_a_network_that_cannot_fire_is_stopped_as_silent_within_its_first_epoch(dataset, monkeypatch, model):
    deaf(monkeypatch)
    config = tiny_fc(model=model, T=3, epochs=3, limit_train=1_000)  # 8 batches per epoch
    seen = []
    history = train(
        config,
        subset(dataset, config),
        silence=SilenceRule(warmup_batches=2, probe_batches=3),
        on_epoch=lambda record, state: seen.append((record["epoch"], state.history.status)),
    )
    assert history.status == "silent"
    assert seen == [(1, "silent")]
    record = history.epochs[0]
    assert record["silent"] is True
    assert record["train_batches"] == 5 < 8
    assert record["silence_fraction"] == 1.0
    assert record["silence_min_spikes"] == pytest.approx(5 * 3 / 100)
    assert record["silence_accuracy"] <= 0.2  # no output spike: it predicts one class
    assert "test_acc" not in record, "no evaluation of a silent model"


def test_a_quiet_network_that_already_classifies_is_not_silent(dataset):
    """Every image is 'quiet' under a huge spike count, but the network learns: only the spike count
    (max_accuracy 1) calls it silent; the default accuracy guard lets it train."""
    config = tiny_fc(T=10, epochs=1, limit_train=1_280, lr=1e-2)  # 10 batches, learns within a few
    quiet = dict(min_spikes=1e6, warmup_batches=5, probe_batches=4)
    count_only = train(config, subset(dataset, config), silence=SilenceRule(**quiet, max_accuracy=1.0))
    guarded = train(config, subset(dataset, config), silence=SilenceRule(**quiet))
    assert count_only.status == "silent"
    assert guarded.status == "completed"
    record = guarded.epochs[0]
    assert record["silence_fraction"] == 1.0 and record["silence_accuracy"] > 0.2
    assert record["silence_accuracy"] == count_only.epochs[0]["silence_accuracy"]  # the same run up to the probe


def test_the_seed_fc_snn_is_not_silent_by_the_default_rule(dataset):
    """Measured on MNIST (seeds 0-2): 51-55% of the images get no output spike over the first 20
    batches, 11-12% over batches 21-40, and fewer than 5 spikes 2.2-2.5% over batches 61-80, the
    default probe."""
    config = RunConfig(model="fc", epochs=1, limit_train=81 * 128, limit_test=200, device="cpu")
    history = train(config, subset(dataset, config))
    assert history.status == "completed"
    record = history.epochs[0]
    assert record["silent"] is False and record["train_batches"] == 81
    assert record["silence_fraction"] < 0.05 and record["silence_min_spikes"] == 5
    assert record["test_acc"] > 0.5


def test_the_probe_changes_nothing_it_watches(dataset):
    config = tiny_fc(epochs=1, limit_train=1_000)
    watch_only = SilenceRule(warmup_batches=1, probe_batches=2, max_fraction=1.0)  # never stops
    probed = train(config, subset(dataset, config), silence=watch_only)
    unprobed = train(config, subset(dataset, config), silence=None)
    assert "silence_fraction" in probed.epochs[0] and "silence_fraction" not in unprobed.epochs[0]
    ignore = TIMING | {"silence_fraction", "silence_min_spikes", "silence_accuracy"}
    assert [{k: v for k, v in r.items() if k not in ignore} for r in probed.epochs] == [
        {k: v for k, v in r.items() if k not in ignore} for r in unprobed.epochs
    ]


def test_the_silence_rule_scales_firmins_count_to_short_simulations():
    rule = SilenceRule()
    assert (rule.min_spikes, rule.max_fraction) == (5, 0.05)
    assert rule.min_spikes_at(100) == 5 and rule.min_spikes_at(400) == 5
    assert rule.min_spikes_at(4) == pytest.approx(0.2)  # below one spike: an image is silent with none at all
    with pytest.raises(ConfigError, match="SilenceRule.max_fraction: must be in"):
        SilenceRule(max_fraction=1.5)
    with pytest.raises(ConfigError, match="SilenceRule.probe_batches"):
        SilenceRule(probe_batches=0)
    with pytest.raises(ConfigError, match="SilenceRule.max_accuracy"):
        SilenceRule(max_accuracy=-0.1)


def test_the_network_is_built_for_the_datas_image_shape_and_classes():
    """Colour 8x8 images of 4 classes: the FC-SNN's first layer takes 3*8*8 pixels and its output 4 classes."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    images = torch.rand(64, 3, 8, 8, generator=g) * 0.2
    for k in range(4):
        images[labels == k, :, 2 * k : 2 * k + 2, :] += 0.8  # the class is the bright pair of rows: learnable
    data = as_dataset((images, labels, images[:32], labels[:32]))
    config = RunConfig(model="fc", net={"T": 5}, epochs=2, batch_size=16, lr=1e-2, device="cpu")
    states = []
    history = train(config, make_splits(data, config), on_epoch=lambda record, state: states.append(state))
    assert history.status == "completed"
    state = states[-1]
    assert (state.input_shape, state.classes) == ((3, 8, 8), 4)
    assert tuple(state.model.fc.weight.shape) == (4, 3 * 8 * 8)
    assert history.last("test_acc") > 0.5  # chance is 0.25


def hidden_fc(input_shape, classes, T: int = 2):
    """A network factory of one's own: an FC-SNN with one hidden layer of 7."""
    return snn.models.fc_snn(input_shape, classes, T=T, hidden_layers=1, width_1=7)


def test_a_factory_passed_as_network_is_the_one_trained(dataset):
    network = snn.networks.resolve(hidden_fc)
    assert (network.name, network.parameters, network.data_arguments) == (
        "tests.snn.test_training:hidden_fc",
        ("T",),
        ("input_shape", "classes"),
    )
    config = RunConfig(model=network.name, net={"T": 3}, epochs=1, limit_train=128, limit_test=64, device="cpu")
    states = []
    history = train(
        config,
        subset(dataset, config),
        network=network,
        silence=None,
        on_epoch=lambda record, state: states.append(state),
    )
    model = states[0].model
    assert model.T == 3 and tuple(model.fc1.weight.shape) == (7, 784) and tuple(model.fc.weight.shape) == (10, 7)
    assert set(history.epochs[0]) >= {"rate_sn1", "rate_sn", "test_spikes_sn1", "test_synops_fc1", "test_synops_fc"}
    again = train(config, subset(dataset, config), silence=None)  # the same factory, found by its name
    assert without_timing(again) == without_timing(history)


class ViewAfterConv(torch.nn.Module):
    """A network of one's own that flattens with ``view``, which needs the conv's output in NCHW."""

    def __init__(self, input_shape, classes, T: int = 2):
        super().__init__()
        self.T = T
        self.conv = torch.nn.Conv2d(input_shape[0], 4, 3, padding=1)
        self.sn1 = neuron.IFNode()
        self.fc = torch.nn.Linear(4 * input_shape[1] * input_shape[2], classes)
        self.sn = neuron.IFNode()

    def forward(self, images):
        functional.reset_net(self)
        current = self.conv(images)
        rate = 0
        for _ in range(self.T):
            spikes = self.sn1(current)
            rate = rate + self.sn(self.fc(spikes.view(spikes.shape[0], -1)))
        return rate / self.T


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_network_of_ones_own_keeps_its_layout_on_the_gpu(dataset):
    """train() leaves a network's memory format as its factory made it (the CSNN makes itself channels_last)."""
    network = snn.networks.resolve(ViewAfterConv)
    config = RunConfig(model=network.name, net={"T": 2}, epochs=1, limit_train=128, limit_test=64, device="cuda")
    history = train(config, make_splits(dataset, config), network=network, silence=None)
    assert history.status == "completed" and math.isfinite(history.epochs[0]["train_loss"])


def test_the_ce_loss_is_cross_entropy_on_the_rates_and_evaluate_uses_the_configs_loss(dataset):
    assert LOSSES == {"mse": rate_loss, "ce": cross_entropy_loss}
    rates, labels = torch.tensor([[0.5, 0.25, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 2])
    expected = -(torch.log_softmax(rates, 1)[torch.arange(2), labels]).mean()
    assert cross_entropy_loss(rates, labels).item() == pytest.approx(expected.item())
    config = RunConfig(model="fc", net={"T": 10, "encoding": "direct"}, loss="ce", device="cpu")  # deterministic
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.fc.weight.mul_(30)  # fires at init
    split = make_splits(dataset, limit_test=300).test
    with torch.no_grad():
        out = model(split.float_images(slice(None)))
    assert 0 < out.mean() < 1
    ce, mse = evaluate(model, split, config)["loss"], evaluate(model, split, config.replace(loss="mse"))["loss"]
    assert ce == pytest.approx(cross_entropy_loss(out, split.labels).item(), rel=1e-5)
    assert mse == pytest.approx(rate_loss(out, split.labels).item(), rel=1e-5)


@pytest.mark.parametrize(("output_layer", "status"), [(None, "silent"), ("sn", "silent"), ("sn1", "completed")])
def test_silence_is_judged_on_the_configured_output_layer(dataset, monkeypatch, output_layer, status):
    """The FC-SNN's output layer never fires, its hidden layer does: silent unless output_layer names sn1."""

    def build_deaf_output(*args, **kwargs):
        model = build_model(*args, **kwargs)
        model.sn.v_threshold = 1e9
        with torch.no_grad():
            model.fc1.weight.abs_().mul_(10)  # the hidden layer fires
        return model

    monkeypatch.setattr(snn.training, "build_model", build_deaf_output)
    config = RunConfig(
        model="fc",
        net={"T": 4, "hidden_layers": 1, "width_1": 16},
        epochs=1,
        limit_train=640,
        limit_test=64,
        device="cpu",
        output_layer=output_layer,
    )
    history = train(config, subset(dataset, config), silence=SilenceRule(warmup_batches=1, probe_batches=2))
    assert history.status == status
    record = history.epochs[0]
    assert record["silence_min_spikes"] == pytest.approx(5 * 4 / 100)  # T: the output layer's 4 steps per forward
    assert record["silence_fraction"] == (1.0 if status == "silent" else 0.0)
