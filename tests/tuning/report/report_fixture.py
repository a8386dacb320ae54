"""An experiment folder as the search writes it, for the report's tests.

The retrain is real (a tiny FC-SNN, T=10, trained on 500 MNIST images by snn's trainer,
two seeds, with checkpoints); the trial rows are written by hand after the folder's
contract, since running a search is the search's own tests' job.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import optuna
import pytest

import snn
from snn.io import write_csv, write_json
from snn.networks import config_from_flat
from snn.run_folder import RunFolder
from snn.training import train
from tuning.experiment import PREDICTIONS, STUDY
from tuning.search.retrain import write_predictions

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "tau": {"type": "float", "low": 1.2, "high": 10.0, "log": True},
    "T": {"type": "int", "low": 10, "high": 100, "log": True},
    "neuron": {"type": "categorical", "choices": ["lif", "plif"]},
    "batch_size": {"type": "categorical", "choices": [32, 64, 128, 256]},
}
FIXED = {"surrogate": "atan", "momentum": 0.9, "weight_decay": 0.0, "lr_schedule": "none"}
# The best trial's values: lr at the top of its range and T at the bottom, so the report flags both.
BEST = {"lr": 0.0095, "tau": 2.0, "T": 10, "neuron": "lif", "batch_size": 32}
# trial_id, status, epochs run (max 4), final test accuracy, params
TRIALS = [
    ("t0001", "TERMINATED", 4, 0.880, {"lr": 1e-3, "tau": 2.5, "T": 40, "neuron": "lif", "batch_size": 128}),
    ("t0002", "TERMINATED", 1, 0.610, {"lr": 2e-4, "tau": 6.0, "T": 70, "neuron": "plif", "batch_size": 256}),
    ("t0003", "TERMINATED", 4, 0.905, {**BEST}),
    ("t0004", "TERMINATED", 2, 0.760, {"lr": 5e-3, "tau": 1.5, "T": 25, "neuron": "plif", "batch_size": 32}),
    ("t0005", "ERROR", 1, None, {"lr": 1.2e-4, "tau": 9.0, "T": 90, "neuron": "lif", "batch_size": 256}),
    ("t0006", "TERMINATED", 1, 0.640, {"lr": 3e-4, "tau": 4.0, "T": 15, "neuron": "lif", "batch_size": 64}),
    ("t0007", "TERMINATED", 4, 0.870, {"lr": 6e-3, "tau": 1.8, "T": 12, "neuron": "plif", "batch_size": 64}),
    ("t0008", "TERMINATED", 2, 0.790, {"lr": 8e-3, "tau": 3.0, "T": 30, "neuron": "lif", "batch_size": 128}),
]
MAX_EPOCHS = 4
RETRAIN_EPOCHS = 2
RETRAIN_SEEDS = (0, 1)


def retrain_config(seed: int) -> snn.RunConfig:
    return config_from_flat(
        "fc",
        {
            **FIXED,
            **BEST,
            "epochs": RETRAIN_EPOCHS,
            "seed": seed,
            "limit_train": 500,
            "limit_test": 500,
            "device": "cpu",
        },
    )


def train_retrain_seed(folder: Path, data: snn.Dataset, seed: int) -> list[dict]:
    """Train one retrain seed into folder/retrain/seed-<seed>/ the way the search does (seed 0: predictions too)."""
    config = retrain_config(seed)
    run = RunFolder(folder / "retrain" / f"seed-{seed}")
    states = []

    def on_epoch(record, state) -> None:
        run.on_epoch(record, state)
        states[:] = [state]

    history = train(config, data, on_epoch=on_epoch).epochs
    if seed == RETRAIN_SEEDS[0]:
        write_predictions(folder / PREDICTIONS, states[0].model, data.test)
    return history


def write_study(folder: Path, trials: list[dict], metrics: list[dict]) -> None:
    """optuna.journal as the search leaves it: full trials COMPLETE, ASHA-stopped ones PRUNED, errors FAIL."""
    distributions = {
        name: optuna.distributions.CategoricalDistribution(spec["choices"])
        if spec["type"] == "categorical"
        else (
            optuna.distributions.IntDistribution if spec["type"] == "int" else optuna.distributions.FloatDistribution
        )(spec["low"], spec["high"], log=spec["log"])
        for name, spec in SPACE.items()
    }
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / STUDY)))
    study = optuna.create_study(study_name=folder.name, storage=storage, direction="maximize")
    for row in trials:
        curve = {m["epoch"]: m["test_acc"] for m in metrics if m["trial_id"] == row["trial_id"]}
        state = (
            optuna.trial.TrialState.FAIL
            if row["status"] == "ERROR"
            else optuna.trial.TrialState.RUNNING
            if row["status"] in ("RUNNING", "PENDING")
            else optuna.trial.TrialState.PRUNED
            if row["stopped_early"]
            else optuna.trial.TrialState.COMPLETE
        )
        value = curve[max(curve)] if state == optuna.trial.TrialState.COMPLETE else None
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value,
                intermediate_values=curve if state != optuna.trial.TrialState.RUNNING else None,
                params={k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/")},
                distributions=distributions,
            )
        )


def accuracy_curve(final: float, epochs: int) -> list[float]:
    """A trial's test accuracy per epoch, rising to ``final`` at its last epoch."""
    return [final * (1 - 0.3 * (math.exp(-k) - math.exp(-(epochs - 1)))) for k in range(epochs)]


SEED_TRIAL = "t0001"


def spike_costs(T: int, acc: float) -> dict[str, float]:
    """Made-up test-split spike figures of an FC-SNN at T steps: more steps, more spikes and SynOps."""
    spikes = 0.8 * T * (1 + acc)
    return {
        "test_spikes_per_image": spikes,
        "test_spikes_sn": spikes,
        "test_synops_per_image": 95.0 * T,
        "test_dense_macs_per_image": 7840.0 * T,
        "test_energy_estimate_uj": 95.0 * T * 0.9e-6,
    }


def trial_rows(metric: str = "test_acc") -> tuple[list[dict], list[dict]]:
    """trials.csv and trial_metrics.csv rows for TRIALS: curves rising towards each final accuracy."""
    trials, metrics = [], []
    for trial_id, status, epochs, final, params in TRIALS:
        curve = [None] * epochs if final is None else accuracy_curve(final, epochs)
        for epoch, acc in enumerate(curve, start=1):
            if acc is None:
                continue
            metrics.append(
                {
                    "trial_id": trial_id,
                    "epoch": epoch,
                    "train_loss": 0.09 - 0.05 * acc,
                    "train_acc": acc + 0.01,
                    "train_seconds": 0.4,
                    "train_images_per_s": 1250.0,
                    "lr": params["lr"],
                    "test_loss": 0.1 - 0.05 * acc,
                    "test_acc": acc,
                    "rate_sn": 0.12 + 0.01 * epoch,
                    "eval_seconds": 0.1,
                    "epoch_seconds": 0.5,
                    **spike_costs(params["T"], acc),
                }
            )
        scored = [a for a in curve if a is not None]
        best, last = (max(scored), scored[-1]) if scored else (None, None)
        costs = {f"last_{k}": v for k, v in spike_costs(params["T"], last or 0.0).items()} if scored else {}
        trials.append(
            {
                "trial_id": trial_id,
                "status": status,
                "stopped_early": status == "TERMINATED" and epochs < MAX_EPOCHS,
                "diverged": False,
                "silent": False,
                "epochs": epochs if scored else 0,
                "seed_trial": trial_id == SEED_TRIAL,
                **costs,
                f"best_{metric}": best,
                f"last_{metric}": last,
                "best_test_acc": best,
                "last_test_acc": last,
                **{f"config/{k}": v for k, v in params.items()},
            }
        )
    return trials, metrics


def write_experiment(folder: Path, retrained: dict[int, list[dict]] | None) -> Path:
    """The contract's files in ``folder``; ``retrained`` None writes a search still under way."""
    trials, metrics = trial_rows()
    if retrained is None:  # half-finished: the last two trials are still queued or just started
        for row, status in ((trials[-2], "RUNNING"), (trials[-1], "PENDING")):
            row.update(
                {"status": status, "stopped_early": False, "epochs": 0, "best_test_acc": None, "last_test_acc": None}
            )
        metrics = [m for m in metrics if m["trial_id"] not in ("t0007", "t0008")]
    write_csv(folder / "trials.csv", trials)
    write_csv(folder / "trial_metrics.csv", metrics)
    write_study(folder, trials, metrics)
    best_config = retrain_config(0).replace(epochs=MAX_EPOCHS).to_dict()
    write_json(folder / "best_config.json", best_config)
    summary = {
        "experiment": folder.name,
        "model": "fc",
        "dataset": "mnist",
        "metric": "test_acc",
        "mode": "max",
        "status": "complete" if retrained else "searching",
        "wall_seconds": 754.2,
        "trials": {
            "total": len(trials),
            "completed": sum(t["status"] == "TERMINATED" and not t["stopped_early"] for t in trials),
            "stopped_early": sum(t["stopped_early"] for t in trials),
            "errored": sum(t["status"] == "ERROR" for t in trials),
            "diverged": 0,
            "unfinished": sum(t["status"] in ("RUNNING", "PENDING") for t in trials),
        },
        "space": SPACE,
        "fixed": FIXED,
        "best_trial": {
            "trial_id": "t0003",
            "metric_value": 0.905,
            "config": best_config,
            "network": "784-10, LIF tau 2, T 10, poisson input",
        },
        "seed_trial": {"trial_id": SEED_TRIAL, "metric_value": 0.880, "epochs": 4, "stopped_early": False},
        "retrain": None,
        "versions": {"torch": "x", "spikingjelly": "y"},
        "git_commit": "0123abc",
    }
    if retrained:
        max_acc = [max(r["test_acc"] for r in rows) for rows in retrained.values()]
        final_acc = [rows[-1]["test_acc"] for rows in retrained.values()]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        std = lambda xs: (sum((x - mean(xs)) ** 2 for x in xs) / len(xs)) ** 0.5  # noqa: E731  (pstdev)
        summary["retrain"] = {
            "epochs": RETRAIN_EPOCHS,
            "seeds": list(retrained),
            "max_test_acc": max_acc,
            "final_test_acc": final_acc,
            "max_test_acc_mean": mean(max_acc),
            "max_test_acc_std": std(max_acc),
            "final_test_acc_mean": mean(final_acc),
            "final_test_acc_std": std(final_acc),
            "checkpoint": "retrain/seed-0/checkpoint.pt",
        }
        write_csv(
            folder / "retrain" / "metrics.csv",
            [{"seed": seed, **row} for seed, rows in retrained.items() for row in rows],
        )
    write_json(folder / "summary.json", summary)
    return folder


_template: list[Path] = []  # the trained folder, shared by every test module that imports these fixtures


@pytest.fixture(scope="session")
def _finished_experiment_template(tmp_path_factory, dataset) -> Path:
    """Trained once per session; tests get their own copy through ``finished_experiment``."""
    if not _template:
        data = snn.make_splits(dataset, limit_train=500, limit_test=500)
        folder = tmp_path_factory.mktemp("template") / "fc-fixture"
        retrained = {seed: train_retrain_seed(folder, data, seed) for seed in RETRAIN_SEEDS}
        _template.append(write_experiment(folder, retrained))
    return _template[0]


@pytest.fixture
def finished_experiment(_finished_experiment_template, tmp_path) -> Path:
    """A complete experiment folder: search, two retrain seeds with checkpoints, summary."""
    return Path(shutil.copytree(_finished_experiment_template, tmp_path / "fc-fixture"))


@pytest.fixture
def half_finished_experiment(tmp_path) -> Path:
    """A search still under way: trials, some running or pending, no retrain."""
    return write_experiment(tmp_path / "fc-half", retrained=None)
