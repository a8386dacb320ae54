"""The one trainer and the one evaluator that the CLI, search trials, retrains and tests use.

``train(config, data, on_epoch=...) -> History`` runs ``config.epochs`` epochs; after each
it evaluates every split with ``evaluate`` and reports one flat record of metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import EpochRecord, History, RunState, load_checkpoint
from .config import ConfigError, RunConfig
from .data import Dataset, Split, batches, resolve_device
from .fastpath import CUDA_ONLY_BACKENDS, select_cuda_backend
from .models import build_model, record_firing_rates

NUM_CLASSES = 10
EVAL_BATCH_SIZE = 128  # images per evaluation batch, as in training: larger ones only add memory
_NAN_CHECK_EVERY = 20  # batches; a host sync, so not every batch on a GPU

OnEpoch = Callable[[EpochRecord, RunState], None]
OnBatch = Callable[[int, int, float], None]  # (batch index, batches per epoch, loss)


def use_backend(backend: str, device: torch.device) -> None:
    """Make spikingjelly's CUDA neurons use ``backend``; a CUDA-only backend on a CPU is a ConfigError."""
    if backend in CUDA_ONLY_BACKENDS and device.type != "cuda":
        raise ConfigError("backend", f"{backend} runs on CUDA only, and the device is {device}", backend)
    if device.type == "cuda":
        select_cuda_backend(backend)


def make_optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def rate_loss(rates: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The seed's loss: MSE between output firing rates [N, 10] and one-hot labels."""
    return F.mse_loss(rates, F.one_hot(labels, NUM_CLASSES).to(rates.dtype))


def _autocast(config: RunConfig, device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, config: RunConfig, batch_size: int = EVAL_BATCH_SIZE) -> dict[str, Any]:
    """Loss, accuracy and per-layer firing rates of ``model`` on one split."""
    model.eval()
    device = split.labels.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    with record_firing_rates(model) as rates, _autocast(config, device):
        for index in batches(len(split), batch_size, shuffle=False, device=device):
            labels = split.labels[index]
            out = model(split.float_images(index)).float()
            loss_sum += rate_loss(out, labels) * len(index)
            correct += (out.argmax(1) == labels).sum()
    n = len(split)
    return {"loss": loss_sum.item() / n, "acc": correct.item() / n, "rates": dict(rates)}


def predict(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Predicted class per image of a float batch [N, 1, 28, 28]."""
    model.eval()
    with torch.no_grad():
        return model(images).argmax(1)


def train(config: RunConfig, data: Dataset, *, on_epoch: OnEpoch | None = None, on_batch: OnBatch | None = None,
          resume_from: Path | str | None = None) -> History:
    """Train the model ``config`` describes on ``data`` for ``config.epochs`` epochs.

    ``data`` must already sit on the config's device (``make_splits(data, config)`` puts it there).
    ``resume_from`` continues a checkpoint written by ``RunState.save``: same config, model,
    optimizer, scheduler, RNG states and history, so the resumed run matches an unbroken one.
    Stops early with ``status == "diverged"`` when the loss becomes NaN or infinite.
    """
    device = resolve_device(config.device)
    use_backend(config.backend, device)
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model.parameters())
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                 if config.lr_schedule == "cosine" else None)
    state = RunState(config, model, optimizer, scheduler, torch.Generator().manual_seed(config.seed), History(config))
    if resume_from is not None:
        load_checkpoint(resume_from, state)

    for epoch in range(len(state.history.epochs) + 1, config.epochs + 1):
        start = time.perf_counter()
        record = {"epoch": epoch, **_train_epoch(state, data.train, device, on_batch)}
        finite = math.isfinite(record["train_loss"]) and _parameters_are_finite(state.model)
        if finite:
            record.update(_evaluate_splits(state, data))
        record["epoch_seconds"] = time.perf_counter() - start
        state.history.epochs.append(record)
        if not finite:
            state.history.status = "diverged"
        elif epoch == config.epochs:
            state.history.status = "completed"
        if on_epoch is not None:
            on_epoch(record, state)
        if state.history.status == "diverged":
            break
    if state.history.status == "running":  # resumed a run that had already finished
        state.history.status = "completed"
    return state.history


def _train_epoch(state: RunState, split: Split, device: torch.device, on_batch: OnBatch | None) -> EpochRecord:
    config, model, optimizer = state.config, state.model, state.optimizer
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n_batches = math.ceil(len(split) / config.batch_size)
    seen = 0
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    for i, index in enumerate(batches(len(split), config.batch_size, shuffle=True,
                                      generator=state.shuffle_rng, device=device)):
        labels = split.labels[index]
        with _autocast(config, device):
            out = model(split.float_images(index)).float()
        loss = rate_loss(out, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(index)
        correct += (out.detach().argmax(1) == labels).sum()
        seen += len(index)
        if on_batch is not None:
            on_batch(i, n_batches, loss.item())
        if (i + 1) % _NAN_CHECK_EVERY == 0 and not (torch.isfinite(loss_sum) and _parameters_are_finite(model)):
            break
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
        if name == "test":
            record.update({f"rate_{layer}": rate for layer, rate in result["rates"].items()})
    record["eval_seconds"] = time.perf_counter() - start
    return record
