"""How far a linear readout of MNIST's pixels gets: the ceiling the FC-SNN (784 -> 10, no hidden layer) sits under.

    SNN_DATA_DIR=DIR python -m benchmarks.linear_ceiling [--epochs 30] [--seeds 3] [--lr 1e-3 3e-3 1e-2]

The FC-SNN's output neuron i integrates sum_p w_ip * spike_p(t): a linear function of the input,
thresholded over time. An ANN with the same single layer, trained without spikes or noise on the
same 55,000 training images (the same 5,000 held out for validation), with cross-entropy, Adam
and a cosine schedule, shows what any linear readout of these pixels reaches. Prints, per learning
rate, final-epoch test accuracy, mean +- std over seeds, next to the maximum over epochs.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from snn.config import RunConfig
from snn.data import default_data_dir, make_splits, read_dataset


def train_linear(splits, epochs: int, seed: int, lr: float, batch: int = 128) -> list[float]:
    """Test accuracy after each epoch of a 784 -> 10 linear classifier (with bias)."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(784, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    train_x = splits.train.images.flatten(1).float().div_(255.0)
    test_x = splits.test.images.flatten(1).float().div_(255.0)
    accuracies = []
    for _ in range(epochs):
        for index in torch.randperm(len(train_x)).split(batch):
            loss = F.cross_entropy(model(train_x[index]), splits.train.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        with torch.no_grad():
            accuracies.append((model(test_x).argmax(1) == splits.test.labels).float().mean().item())
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument(
        "--data-dir", default=None, help="folder holding MNIST/raw (default $SNN_DATA_DIR, else ./data)"
    )
    args = parser.parse_args()
    data = read_dataset(args.data_dir or default_data_dir(), download=False)
    splits = make_splits(data, RunConfig(model="fc", val_size=5000))  # the search's split: 5,000 held out
    print(
        f"linear 784 -> 10, cross-entropy, Adam with a cosine schedule, {args.epochs} epochs, {args.seeds} seeds, "
        f"{len(splits.train):,} training images"
    )
    for lr in args.lr:
        runs = [train_linear(splits, args.epochs, seed, lr) for seed in range(args.seeds)]
        final = [100 * run[-1] for run in runs]
        best = [100 * max(run) for run in runs]
        print(
            f"lr {lr:g}: final-epoch test accuracy {statistics.mean(final):.2f}% +- {_std(final):.2f}%; "
            f"max over epochs {statistics.mean(best):.2f}% +- {_std(best):.2f}%",
            flush=True,
        )


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
