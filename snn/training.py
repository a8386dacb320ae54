"""The one trainer and the one evaluator that the CLI, search trials, retrains and tests use.

``train(config, data, on_epoch=...) -> History`` runs ``config.epochs`` epochs; after each
it evaluates every split with ``evaluate`` and reports one flat record of metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from .checkpoint import EpochRecord, History, RunState, load_checkpoint
from .config import ConfigError, RunConfig
from .data import Dataset, Split, batches, random_shift, resolve_device
from .fastpath import CUDA_ONLY_BACKENDS, select_cuda_backend
from .networks import Network, build_model
from .spikes import QuietOutputCounter, record_activity

EVAL_BATCH_SIZE = 128  # images per evaluation batch, as in training: larger ones only add memory
_NAN_CHECK_EVERY = 20  # batches; a host sync, so not every batch on a GPU

OnEpoch = Callable[[EpochRecord, RunState], None]
OnBatch = Callable[[int, int, float], None]  # (batch index, batches per epoch, loss)


def check_backend(backend: str, device: torch.device) -> None:
    """A CUDA-only backend on a CPU is a ConfigError."""
    if backend in CUDA_ONLY_BACKENDS and device.type != "cuda":
        raise ConfigError("backend", f"{backend} runs on CUDA only, and the device is {device}", backend)


def use_backend(backend: str, device: torch.device) -> None:
    """Make spikingjelly's CUDA neurons use ``backend``; a CUDA-only backend on a CPU is a ConfigError."""
    check_backend(backend, device)
    if device.type == "cuda":
        select_cuda_backend(backend)


def make_optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def rate_loss(rates: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The seed's loss: MSE between output firing rates [N, classes] and one-hot labels."""
    return F.mse_loss(rates, F.one_hot(labels, rates.shape[1]).to(rates.dtype))


def cross_entropy_loss(rates: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the output firing rates [N, classes] as the logits."""
    return F.cross_entropy(rates, labels)


LOSSES = {"mse": rate_loss, "ce": cross_entropy_loss}


@dataclass(frozen=True)
class SilenceRule:
    """When ``train`` stops a run as silent: Firmin et al. 2024 (Neurocomputing), probed early.

    A network is silent when its output layer emits fewer than ``min_spikes`` spikes per image
    (summed over the T steps and the output neurons) for more than ``max_fraction`` of the
    training images the probe watches. The probe watches the training forwards of the first
    epoch's batches ``warmup_batches + 1`` to ``warmup_batches + probe_batches``; a first epoch
    shorter than that is not judged. The warm-up is there because healthy networks start
    silent: the seed FC-SNN (Adam 1e-3) emits no output spike for half its images over its
    first 20 batches and for 11% over the next 20, and fewer than 5 for 2.5% in batches 61-80.

    ``min_spikes`` is Firmin's S for a simulation of ``per_steps`` steps (the seed FC-SNN's T);
    a shorter one uses S * T / per_steps. The output is a rate over T steps whose optimum under
    the loss is T spikes (the true class's neuron at every step): at T = 4 the seed CSNN emits
    about 3 per image while it learns, so the literal S = 5 would call it silent; scaled, an
    image is silent there when its output emits no spike at all (0.2% of them after 10 batches,
    100% for the LIF and PLIF CSNN whose deeper layers never fire).

    Added here: a run whose training accuracy over the watched images is above ``max_accuracy``
    (twice chance on 10 classes) already classifies and is never called silent, however quiet
    its output. On the full-MNIST FC-SNN search in docs/evidence.md, Firmin's count alone stopped
    three trials that were at 43-49% training accuracy over their first 80 batches; silent
    networks sit at chance (a network with no output spike predicts one class).
    """

    min_spikes: float = 5.0  # S: output spikes per image (at per_steps steps) below which an image is silent
    max_fraction: float = 0.05  # F: the run is silent when more than this fraction of the images is
    probe_batches: int = 20  # training batches the probe counts over
    warmup_batches: int = 60  # training batches of the first epoch before the probe starts
    per_steps: int = 100  # the simulation length at which min_spikes applies unscaled, in time steps
    max_accuracy: float = 0.2  # only a run at most this accurate on the watched images can be silent

    def __post_init__(self) -> None:
        rules = [
            ("min_spikes", self.min_spikes > 0, "must be > 0"),
            ("max_fraction", 0 <= self.max_fraction <= 1, "must be in [0, 1] (1 never stops a run)"),
            ("probe_batches", self.probe_batches >= 1, "must be >= 1"),
            ("warmup_batches", self.warmup_batches >= 0, "must be >= 0"),
            ("per_steps", self.per_steps >= 1, "must be >= 1"),
            ("max_accuracy", 0 <= self.max_accuracy <= 1, "must be in [0, 1] (1: the spike count alone)"),
        ]
        for name, holds, rule in rules:
            if not holds:
                raise ConfigError(f"SilenceRule.{name}", rule, getattr(self, name))

    def min_spikes_at(self, T: int) -> float:
        """The output spikes per image below which an image is silent, for a simulation of T steps."""
        return self.min_spikes * min(1.0, T / self.per_steps)


FIRMIN_SILENCE = SilenceRule()  # S = 5 spikes, F = 5%


class _SilenceProbe:
    """``SilenceRule`` applied to the training forwards of one epoch, on the output layer
    (``output_layer``, else the last spiking layer the network defines); T is the steps it runs per forward."""

    def __init__(self, rule: SilenceRule, model: nn.Module, output_layer: str | None):
        self.rule, self.model, self.output_layer = rule, model, output_layer
        self.steps: int | None = None  # the output layer's steps per forward, once watched
        self.fraction: float | None = None  # of the watched images that were silent, once judged
        self.accuracy: float | None = None  # training accuracy on the watched images, once judged
        self._counter: QuietOutputCounter | None = None
        self._correct: int | torch.Tensor = 0  # correct predictions while watching (a tensor once counted)
        self._seen = 0

    @property
    def silent(self) -> bool:
        return (
            self.fraction is not None
            and self.fraction > self.rule.max_fraction
            and self.accuracy <= self.rule.max_accuracy
        )

    def before_batch(self, i: int) -> None:
        if i == self.rule.warmup_batches:
            self._counter = QuietOutputCounter(self.model, self._min_spikes, self.output_layer)

    def _min_spikes(self, steps: int) -> float:
        self.steps = steps
        return self.rule.min_spikes_at(steps)

    @property
    def min_spikes(self) -> float | None:
        return None if self.steps is None else self.rule.min_spikes_at(self.steps)

    def watch(self, out: torch.Tensor, labels: torch.Tensor) -> None:
        """Count a training batch's correct predictions while the probe watches."""
        if self._counter is not None:
            self._correct = self._correct + (out.argmax(1) == labels).sum()  # a tensor: no host sync
            self._seen += len(labels)

    def judged_silent(self, i: int) -> bool:
        """After batch i: True when the probe ends here and finds the network silent (one host sync)."""
        if self._counter is None or i + 1 < self.rule.warmup_batches + self.rule.probe_batches:
            return False
        quiet, images = self._counter.close()
        self._counter = None
        self.fraction = quiet / images
        self.accuracy = int(self._correct) / max(1, self._seen)
        return self.silent

    def close(self) -> None:
        if self._counter is not None:
            self._counter.close()
            self._counter = None

    def record(self) -> EpochRecord:
        if self.fraction is None:
            return {}
        return {
            "silence_fraction": self.fraction,
            "silence_min_spikes": self.min_spikes,
            "silence_accuracy": self.accuracy,
        }


def _autocast(config: RunConfig, device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, config: RunConfig, batch_size: int = EVAL_BATCH_SIZE) -> dict[str, Any]:
    """Loss, accuracy, per-layer firing rates and spike activity of ``model`` on one split.

    Returns ``loss`` and ``acc``; ``rates``: {spiking layer: spikes per neuron per step};
    ``activity``: flat {name: value} per image, as ``snn.spikes.Activity.metrics`` defines it
    (spikes_per_image, spikes_<layer>, input_spikes_per_image, synops_per_image,
    synops_<synaptic layer>, encoder_macs_per_image, dense_macs_per_image, energy_estimate_uj).
    """
    model.eval()
    device = split.labels.device
    loss_fn = LOSSES[config.loss]
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    with record_activity(model) as activity, _autocast(config, device):
        for index in batches(len(split), batch_size, shuffle=False, device=device):
            labels = split.labels[index]
            functional.reset_net(model)  # every batch from the neurons' initial state
            out = model(split.float_images(index)).float()
            loss_sum += loss_fn(out, labels) * len(index)
            correct += (out.argmax(1) == labels).sum()
    n = len(split)
    return {
        "loss": loss_sum.item() / n,
        "acc": correct.item() / n,
        "rates": dict(activity.rates),
        "activity": activity.metrics(),
    }


def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Predicted class per image of a float batch [N, C, H, W]."""
    model.eval()
    with torch.no_grad():
        functional.reset_net(model)
        return model(images).argmax(1)


def train(
    config: RunConfig,
    data: Dataset,
    *,
    on_epoch: OnEpoch | None = None,
    on_batch: OnBatch | None = None,
    resume_from: Path | str | None = None,
    silence: SilenceRule | None = FIRMIN_SILENCE,
    network: Network | None = None,
) -> History:
    """Train the model ``config`` describes on ``data`` for ``config.epochs`` epochs.

    ``data`` must already sit on the config's device (``make_splits(data, config)`` puts it there);
    the network is built for its image shape and classes, by ``network`` when given (a resolved
    factory, e.g. a callable passed from Python) else by the factory ``config.model`` names.
    ``resume_from`` continues a checkpoint written by ``RunState.save``: same config, model,
    optimizer, scheduler, RNG states and history, so the resumed run matches an unbroken one.
    Stops early with ``status == "diverged"`` when the loss (or a weight) becomes NaN or
    infinite, and with ``status == "silent"`` when the first epoch's probe finds the network
    silent by ``silence`` (a ``SilenceRule``; None never probes). Either way the epoch's record
    still reaches ``on_epoch``, without evaluation.

    Each epoch's record (``on_epoch``, metrics.csv, trial_metrics.csv) holds, flat:
    epoch, train_loss, train_acc, train_seconds, train_images_per_s, train_batches, lr,
    silent (true only in the record of the epoch that stopped as silent), silence_fraction,
    silence_min_spikes and silence_accuracy (the first epoch's, once the probe has judged), then per evaluated split
    (test, and val when held out) <split>_loss, <split>_acc and the ``evaluate`` activity keys
    with the split's prefix, rate_<layer> of the test split, eval_seconds and epoch_seconds.
    The activity keys, per image, summed over the T steps and averaged over the split's images
    (``snn.spikes`` defines them exactly):

    * ``<split>_spikes_per_image``: spikes of all spiking layers (the Poisson input excluded)
    * ``<split>_spikes_<layer>``: spikes of one spiking layer (fc: sn; csnn: sn1 .. sn4)
    * ``<split>_input_spikes_per_image``: expected Poisson input spikes, T x summed intensity (csnn: 0)
    * ``<split>_synops_per_image``: synaptic operations, each spike once per synapse it drives
    * ``<split>_synops_<layer>``: SynOps into one synaptic layer (fc: fc; csnn: conv2, fc1, fc2)
    * ``<split>_encoder_macs_per_image``: MACs of the layer the analog image drives (csnn's first conv; fc: 0)
    * ``<split>_dense_macs_per_image``: MACs of an ANN of the same layers over T steps
    * ``<split>_energy_estimate_uj``: 0.9 pJ per SynOp + 4.6 pJ per encoder MAC, in µJ; an
      estimate from Horowitz's 45 nm figures (ISSCC 2014), synaptic arithmetic only
    """
    device = resolve_device(config.device)
    use_backend(config.backend, device)
    torch.manual_seed(config.seed)
    model = build_model(config, data.input_shape, data.classes, network).to(device)  # in the layout it was built
    optimizer = make_optimizer(config, model.parameters())
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
        if config.lr_schedule == "cosine"
        else None
    )
    state = RunState(
        config,
        model,
        optimizer,
        scheduler,
        torch.Generator().manual_seed(config.seed),
        History(config),
        data.input_shape,
        data.classes,
    )
    if resume_from is not None:
        load_checkpoint(resume_from, state)

    for epoch in range(len(state.history.epochs) + 1, config.epochs + 1):
        start = time.perf_counter()
        probe = _SilenceProbe(silence, state.model, config.output_layer) if silence is not None and epoch == 1 else None
        record = {"epoch": epoch, **_train_epoch(state, data.train, device, on_batch, probe)}
        finite = math.isfinite(record["train_loss"]) and _parameters_are_finite(state.model)
        silent = finite and probe is not None and probe.silent
        record["silent"] = silent
        if probe is not None:
            record.update(probe.record())
        if finite and not silent:
            record.update(_evaluate_splits(state, data))
        record["epoch_seconds"] = time.perf_counter() - start
        state.history.epochs.append(record)
        if not finite:
            state.history.status = "diverged"
        elif silent:
            state.history.status = "silent"
        elif epoch == config.epochs:
            state.history.status = "completed"
        if on_epoch is not None:
            on_epoch(record, state)
        if state.history.status in ("diverged", "silent"):
            break
    if state.history.status == "running":  # resumed a run that had already finished
        state.history.status = "completed"
    return state.history


def _train_epoch(
    state: RunState, split: Split, device: torch.device, on_batch: OnBatch | None, probe: _SilenceProbe | None = None
) -> EpochRecord:
    config, model, optimizer = state.config, state.model, state.optimizer
    loss_fn = LOSSES[config.loss]
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n_batches = math.ceil(len(split) / config.batch_size)
    seen = trained = 0
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    try:
        for i, index in enumerate(
            batches(len(split), config.batch_size, shuffle=True, generator=state.shuffle_rng, device=device)
        ):
            if probe is not None:
                probe.before_batch(i)
            labels = split.labels[index]
            with _autocast(config, device):
                functional.reset_net(model)  # every batch from the neurons' initial state
                out = model(random_shift(split.float_images(index), config.augment_shift, state.shuffle_rng)).float()
            loss = loss_fn(out, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(index)
            correct += (out.detach().argmax(1) == labels).sum()
            if probe is not None:
                probe.watch(out.detach(), labels)
            seen += len(index)
            trained = i + 1
            if on_batch is not None:
                on_batch(i, n_batches, loss.item())
            if (i + 1) % _NAN_CHECK_EVERY == 0 and not (torch.isfinite(loss_sum) and _parameters_are_finite(model)):
                break
            if probe is not None and probe.judged_silent(i):
                break
    finally:
        if probe is not None:
            probe.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if state.scheduler is not None:
        state.scheduler.step()
    return {
        "train_loss": loss_sum.item() / seen,
        "train_acc": correct.item() / seen,
        "train_seconds": seconds,
        "train_images_per_s": seen / seconds,
        "train_batches": trained,
        "lr": lr,
    }


def _parameters_are_finite(model: nn.Module) -> bool:
    """False once a weight is NaN or infinite. The loss alone misses it: a NaN membrane never
    reaches threshold, so a NaN network outputs finite (zero) rates and a finite loss."""
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def _evaluate_splits(state: RunState, data: Dataset) -> EpochRecord:
    record: EpochRecord = {}
    start = time.perf_counter()
    for name, split in data.splits().items():
        if name == "train":
            continue  # train loss/acc come from the epoch itself, as in the seed
        result = evaluate(state.model, split, state.config)
        record[f"{name}_loss"], record[f"{name}_acc"] = result["loss"], result["acc"]
        record.update({f"{name}_{key}": value for key, value in result["activity"].items()})
        if name == "test":
            record.update({f"rate_{layer}": rate for layer, rate in result["rates"].items()})
    record["eval_seconds"] = time.perf_counter() - start
    return record
