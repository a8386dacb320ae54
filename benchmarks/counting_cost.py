"""What counting spikes and SynOps costs the evaluation: the evaluator with and without ``record_activity``.

    SNN_DATA_DIR=DIR python -m benchmarks.counting_cost [--images 2048] [--repeats 5]

For each network (the seed FC-SNN and CSNN, a two-hidden-layer FC-SNN, a three-block CSNN, the SEW
example), the same evaluation loop over the same test images runs with the spike accounting's hooks
and without them, alternately, ``--repeats`` times; it prints the median seconds of each and the
overhead of counting as a share of the plain evaluation (ratios in one run: the machine may be busy).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from snn import RunConfig
from snn.data import batches, default_data_dir, read_dataset
from snn.networks import build_model
from snn.spikes import record_activity

NETWORKS = {
    "fc (seed)": ("fc", {}),
    "fc 784-400-400-10, direct": (
        "fc",
        {"hidden_layers": 2, "width_1": 400, "width_2": 400, "encoding": "direct", "T": 8},
    ),
    "csnn (seed)": ("csnn", {}),
    "csnn, three 5x5 blocks": ("csnn", {"blocks": 3, "kernel_size": 5, "channels": 32}),
    "examples.sew_resnet": ("examples.sew_resnet.net:build", {"blocks": 2, "channels": 16}),
}


def evaluation_seconds(model: torch.nn.Module, images: torch.Tensor, counting: bool) -> float:
    start = time.perf_counter()
    with torch.inference_mode(), record_activity(model) if counting else contextlib.nullcontext():
        for index in batches(len(images), 128, shuffle=False):
            model(images[index])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.counting_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    data = read_dataset(default_data_dir(), download=False)
    images = data.test.float_images(slice(0, args.images))
    print(f"{args.images} test images, {torch.get_num_threads()} threads, median of {args.repeats} repeats")
    print(f"{'network':<28} {'plain s':>8} {'counting s':>11} {'overhead':>9}")
    for label, (model, net) in NETWORKS.items():
        torch.manual_seed(0)
        network = build_model(RunConfig(model=model, net=net), data.input_shape, data.classes).eval()
        evaluation_seconds(network, images[:256], True)  # warm-up: kernels built, caches filled
        plain, counting = [], []
        for _ in range(args.repeats):
            plain.append(evaluation_seconds(network, images, False))
            counting.append(evaluation_seconds(network, images, True))
        p, c = statistics.median(plain), statistics.median(counting)
        print(f"{label:<28} {p:8.2f} {c:11.2f} {c / p - 1:9.1%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
