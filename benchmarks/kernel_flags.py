"""What the portable build costs: each C kernel's time per call when built by default (portable, with its loops'
AVX2 copy on x86-64), with ``-march=native``, and with only the baseline copy (``-DSNN_ONE_VERSION``: SSE2).

    python -m benchmarks.kernel_flags [--calls 30] [--rounds 5] [--json]

The three builds are loaded side by side in one process and called in turn, round after round, on the seed
networks' shapes (forward and backward through the same Python code as training; torch's threads): a
machine's load then weighs on all three alike. Prints the median ms per call of each, the range of the
per-round medians, and each build's time relative to the default one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

BUILDS = {"portable (default)": "", "-march=native": "-march=native", "baseline copy only (SSE2)": "-DSNN_ONE_VERSION"}


def libraries() -> dict[str, dict]:
    """{build: {source name: checked library}} for each build in BUILDS."""
    from snn.fastpath import fire_pool, native, neurons, poisson

    libs = {}
    for build, flags in BUILDS.items():
        os.environ[native.EXTRA_FLAGS] = flags
        native._loaded.clear()
        libs[build] = {k.source_name: k.get() for k in (neurons._KERNELS, fire_pool._KERNELS, poisson._KERNELS)}
        assert all(libs[build].values()), f"{build}: a kernel was refused"
    os.environ.pop(native.EXTRA_FLAGS)
    return libs


def cases() -> dict:
    """{name: (source name, fn(lib))}: one forward and backward of each kernel on a seed network's shape."""
    from snn.fastpath import fire_pool, neurons, poisson
    from tests.snn.test_fast_paths import pair

    torch.manual_seed(0)
    fc_x, csnn_x = torch.randn(100, 128, 10) * 1.5 + 0.4, torch.randn(4, 128, 1024) * 1.5 + 0.4
    block1 = torch.randn(128, 64, 28, 28) * 1.5 + 0.4
    block2 = torch.randn(4, 128, 64, 14, 14) * 1.5 + 0.4
    images = torch.rand(128, 784) * (torch.rand(128, 784) < 0.19)  # about MNIST's share of fractional pixels
    weight = torch.randn(10, 784) * 0.05
    lanes = poisson.uniform_lanes((int(((images > 0) & (images < 1)).sum()), 100), "cpu")

    def neuron(x):
        def run(lib):
            leaf = x.clone().requires_grad_()
            spikes, _ = neurons._FusedIFLIF.apply(leaf, torch.zeros(x.shape[1:]), 2.0, 1.0, 2.0, 1, lib)
            spikes.sum().backward()

        return run

    def block(x, steps):
        spec = fire_pool._fusable(pair("if", "atan")[0], fire_pool.FastMaxPool2d(2, step_mode="m"), x, steps)

        def run(lib):
            leaf = x.clone().requires_grad_()
            fire_pool._FirePool.apply(leaf, spec, lib)[0].sum().backward()

        return run

    def current(lib):
        w = weight.clone().requires_grad_()
        poisson._current(lib, images, w, lanes).sum().backward()

    return {
        "FC-SNN LIF layer [100, 128, 10]": ("neurons.c", neuron(fc_x)),
        "CSNN fc1 IF layer [4, 128, 1024]": ("neurons.c", neuron(csnn_x)),
        "CSNN block 1: IF + max-pool, [128, 64, 28, 28] over 4 steps": ("fire_pool.c", block(block1, 4)),
        "CSNN block 2: IF + max-pool, [4, 128, 64, 14, 14]": ("fire_pool.c", block(block2, None)),
        "FC-SNN Poisson current, 128 images, T = 100": ("poisson.c", current),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernel_flags", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30, help="calls per build and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    libs = libraries()
    rounds: dict[str, dict[str, list[float]]] = {}
    for name, (source, run) in cases().items():
        rounds[name] = {build: [] for build in BUILDS}
        for build in BUILDS:
            run(libs[build][source])  # warm-up
        for _ in range(args.rounds):
            for build in BUILDS:
                times = []
                for _ in range(args.calls):
                    start = time.perf_counter()
                    run(libs[build][source])
                    times.append(time.perf_counter() - start)
                rounds[name][build].append(statistics.median(times) * 1e3)
    result = {"threads": torch.get_num_threads(), "ms_per_call": rounds}
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{torch.get_num_threads()} threads; ms per forward + backward: median of the rounds' medians (range); "
        f"relative to the portable build\n"
    )
    print("| kernel | " + " | ".join(BUILDS) + " |\n| --- |" + " ---: |" * len(BUILDS))
    for name, per_build in rounds.items():
        base = statistics.median(per_build["portable (default)"])
        cells = [
            f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f}), {statistics.median(v) / base:.2f}x"
            for v in per_build.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
