"""The retrain: the best configuration trained for the full epochs, once per retrain seed.

Each seed is a run folder (``retrain/seed-<s>/``, ``snn.run_folder``) that an interrupted
search continues from its checkpoint. The first seed's model also leaves its test-set
predictions in ``retrain/predictions.npz``, so the report shows them without running a model.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from snn.checkpoint import read_checkpoint
from snn.config import RunConfig
from snn.data import Dataset, Split, batches, make_splits, resolve_device
from snn.io import atomic_write_bytes, write_csv
from snn.networks import Network, build_model
from snn.run_folder import CHECKPOINT_FILE, RunFolder
from snn.training import EVAL_BATCH_SIZE, RunState, predict, train

from .. import experiment as files

SAMPLE_IMAGES = 10  # test images the report shows with their predictions


def retrain(
    experiment: Path,
    best_config: dict[str, Any],
    epochs: int,
    seeds: int,
    data: Dataset,
    network: Network | None = None,
) -> dict[str, Any]:
    """Train ``best_config`` for ``epochs`` with ``seeds`` seeds; return the summary of their test accuracy.

    ``network``: the resolved factory (a callable passed from Python); else ``best_config``'s model names it."""
    base = RunConfig.from_dict(best_config).replace(epochs=epochs)
    splits = make_splits(data, base)
    histories: dict[int, list[dict[str, Any]]] = {}
    first_model = None
    for seed in range(base.seed, base.seed + seeds):
        config = base.replace(seed=seed)
        folder = RunFolder(experiment / files.retrain_folder(seed))
        print(f"retraining the best config for {config.epochs} epochs (seed {seed}) -> {folder.path}")
        final: list[RunState] = []

        def on_epoch(record: dict[str, Any], state: RunState, folder: RunFolder = folder) -> None:
            folder.on_epoch(record, state)
            final[:] = [state]
            tqdm.write(
                f"  retrain epoch {record['epoch']}/{epochs}: test acc {record.get('test_acc', math.nan):.2%}, "
                f"train loss {record['train_loss']:.4f}, {record['train_images_per_s']:.0f} img/s"
            )

        history = train(
            config,
            splits,
            on_epoch=on_epoch,
            on_batch=_progress_bar(),
            resume_from=folder.resume_point(),
            silence=None,  # the search judged this configuration; the retrain trains every epoch asked for
            network=network,
        )
        histories[seed] = history.epochs
        if first_model is None:
            first_model = final[0].model if final else _saved_model(folder, config, splits, network)
    write_csv(experiment / files.RETRAIN_METRICS, [{"seed": s, **r} for s, h in histories.items() for r in h])
    if first_model is not None:
        write_predictions(experiment / files.PREDICTIONS, first_model, splits.test)
    checkpoint = f"{files.retrain_folder(base.seed)}/{CHECKPOINT_FILE}"
    return files.retrain_summary(histories, epochs, checkpoint)


def retrain_front(experiment: Path, rows: list[dict[str, Any]], space, settings, data: Dataset) -> list[dict[str, Any]]:
    """Retrain ``settings.retrain_pareto`` points spread along the Pareto front, each in retrain-pareto/<trial>/."""
    accuracy = f"last_{settings.metric}"
    cost = f"last_{files.objective_metric(settings.cost, settings.metric)}"
    retrained = []
    for point in files.spread(files.pareto_front(rows, accuracy, cost), settings.retrain_pareto):
        config = space.config_for(
            files.sampled_values(point), device=settings.device, epochs=space.budget.retrain_epochs
        ).to_dict()
        print(
            f"Pareto point {point['trial_id']}: {settings.metric} {point[accuracy]:.2%}, "
            f"{point[cost]:,.0f} {settings.cost} per image in the search"
        )
        summary = retrain(
            experiment / files.PARETO_RETRAIN / str(point["trial_id"]),
            config,
            space.budget.retrain_epochs,
            settings.retrain_seeds,
            data,
            space.net,
        )
        retrained.append(
            {
                "trial_id": point["trial_id"],
                "search_accuracy": point[accuracy],
                "search_cost": point[cost],
                "retrain": summary,
            }
        )
    return retrained


def _saved_model(folder: RunFolder, config: RunConfig, data: Dataset, network: Network | None) -> torch.nn.Module:
    """The model of a retrain that had already finished before this run (nothing left to train)."""
    model = build_model(config, data.input_shape, data.classes, network).to(resolve_device(config.device))
    model.load_state_dict(read_checkpoint(folder.checkpoint)["model"])
    return model


def write_predictions(path: Path, model: torch.nn.Module, test: Split) -> None:
    """The model's predicted class for every test image, and a few images to show (uint8 [n, H, W] or [n, H, W, 3])."""
    torch.manual_seed(0)  # Poisson input: the same predictions for the same model
    predicted = torch.cat(
        [
            predict(model, test.float_images(index)).cpu()
            for index in batches(len(test), EVAL_BATCH_SIZE, shuffle=False, device=test.labels.device)
        ]
    )
    picks = np.random.default_rng(0).choice(len(test), size=min(SAMPLE_IMAGES, len(test)), replace=False)
    buffer = io.BytesIO()
    samples = test.images[torch.from_numpy(picks)].cpu()  # [n, C, H, W]
    if samples.is_floating_point():
        samples = (samples * 255).round()
    samples = samples.to(torch.uint8)
    samples = samples[:, 0] if samples.shape[1] == 1 else samples.permute(0, 2, 3, 1)  # greyscale or RGB
    np.savez_compressed(
        buffer,
        labels=test.labels.cpu().numpy(),
        predicted=predicted.numpy(),
        sample_index=picks,
        sample_images=samples.numpy(),
    )
    atomic_write_bytes(path, buffer.getvalue())


def _progress_bar():
    """A tqdm bar over each epoch's batches (``train``'s ``on_batch``)."""
    bar = None

    def on_batch(i: int, n: int, loss: float) -> None:
        nonlocal bar
        if bar is None or i == 0:
            if bar is not None:
                bar.close()
            bar = tqdm(total=n, desc="  retrain", unit="batch", leave=False)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if i == n - 1:
            bar.close()
            bar = None

    return on_batch
