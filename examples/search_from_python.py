"""Search a network defined right here, on tensors you already hold, from Python: ``tuning.search.run``.

    SNN_DATA_DIR=DIR python examples/search_from_python.py [--results-dir results]

The factory below is a plain function; the data are four tensors (here the first images of MNIST,
read once; any [N, C, H, W] images in [0, 1] or uint8 and integer labels will do). The search
returns a SearchResult: its folder, the trials as a DataFrame, the best configuration and the
retrain's figures. A second search in the same process runs after the first.
"""

from __future__ import annotations

import argparse

from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from snn.data import default_data_dir, read_dataset
from tuning.search import run


class TinyCSNN(nn.Module):
    """Conv-BN-IF-MaxPool -> Linear-IF on the image repeated T times."""

    def __init__(self, input_shape, classes, channels, T):
        super().__init__()
        c, h, w = input_shape
        self.T = T
        self.conv = nn.Sequential(nn.Conv2d(c, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.sn1 = neuron.IFNode(surrogate_function=surrogate.ATan(), step_mode="m")
        self.pool = layer.MaxPool2d(2, step_mode="m")
        self.fc = layer.Linear(channels * (h // 2) * (w // 2), classes, bias=False, step_mode="m")
        self.sn2 = neuron.IFNode(surrogate_function=surrogate.ATan(), step_mode="m")

    def forward(self, images):
        functional.reset_net(self)
        x = self.conv(images).unsqueeze(0).repeat(self.T, 1, 1, 1, 1)  # [T, N, C, H, W]
        return self.sn2(self.fc(self.pool(self.sn1(x)).flatten(2))).mean(0)  # [N, classes]


def tiny_csnn(input_shape=(1, 28, 28), classes=10, channels=8, T=2):
    return TinyCSNN(input_shape, classes, channels, T)


SPACE = {
    "search": {
        "channels": {"type": "categorical", "choices": [4, 8, 16]},
        "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
    },
    "fixed": {"optimizer": "adam", "T": 2},
    "budget": {"trials": 3, "epochs_per_trial": 2, "grace_period": 1, "reduction_factor": 2, "retrain_epochs": 2},
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default="results")
    args = parser.parse_args(argv)
    mnist = read_dataset(default_data_dir(), "mnist")
    data = (
        (mnist.train.images[:3000], mnist.train.labels[:3000]),
        (mnist.test.images[:1000], mnist.test.labels[:1000]),
    )
    for objective in ("accuracy", "accuracy,synops"):  # two searches, one after the other, in one process
        result = run(
            SPACE, model=tiny_csnn, data=data, objective=objective, retrain_seeds=1, results_dir=args.results_dir
        )
        print(
            f"{objective}: best {result.best_config['net']}, retrained test accuracy "
            f"{result.retrain['final_test_acc_mean']:.2%}, {len(result.trials)} trials in {result.folder}"
        )
        if result.pareto is not None:
            print(result.pareto[["trial_id", "last_test_acc", "last_test_synops_per_image"]].to_string(index=False))


if __name__ == "__main__":
    main()
