"""What the C kernels' build and known-answer checks cost: first use on a machine, and every later process.

    python -m benchmarks.kernel_checks [--runs 3] [--json]

Each run uses a new, empty kernel cache and two fresh processes: the first builds and checks the three
kernels (the check's own seconds are read from the verdicts it stores), the second loads them from the
cache. Each is done twice: in a process that has trained nothing yet ("cold": the first check then pays
spikingjelly's lazy imports), and in one that has already run a spikingjelly neuron and an optimizer step,
as a training process has ("warm"). Prints seconds per kernel, the range over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

KERNELS = ("neurons.c", "fire_pool.c", "poisson.c")

PROBE = """
import json, os, sys, time
import torch
from snn.fastpath import fire_pool, native, neurons, poisson
if sys.argv[1] == "warm":
    from spikingjelly.activation_based import neuron, surrogate
    x = torch.randn(2, 3, requires_grad=True)
    neuron.IFNode(surrogate_function=surrogate.ATan(), step_mode="m")(x).sum().backward()
    torch.optim.Adam([x]).step()
out = {}
for kernels in (neurons._KERNELS, fire_pool._KERNELS, poisson._KERNELS):
    start = time.perf_counter()
    assert kernels.get() is not None, kernels.source_name
    out[kernels.source_name] = time.perf_counter() - start
cache = os.environ["SNN_KERNEL_CACHE"]
checks = {}
for name in os.listdir(cache):
    if name.endswith(".verdict"):
        checks[name.split("-")[0] + ".c"] = json.load(open(os.path.join(cache, name)))["check_seconds"]
print(json.dumps({"get_s": out, "check_s": checks}))
"""


def one_run(mode: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "SNN_KERNEL_CACHE": cache, "SNN_C_KERNELS": "1"}
        runs = [
            json.loads(
                subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            for _ in range(2)
        ]
    return {"build_and_check_s": runs[0]["get_s"], "check_s": runs[0]["check_s"], "cached_load_s": runs[1]["get_s"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernel_checks", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {mode: [one_run(mode) for _ in range(args.runs)] for mode in ("cold", "warm")}
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"seconds, range over {args.runs} runs (each with an empty cache)\n")
    print("| | " + " | ".join(f"`{k}`" for k in KERNELS) + " |\n| --- |" + " ---: |" * len(KERNELS))
    rows = [
        ("known-answer check, warm process", "warm", "check_s"),
        ("known-answer check, cold process", "cold", "check_s"),
        ("build and check (first use), warm", "warm", "build_and_check_s"),
        ("load from the cache with its verdict", "warm", "cached_load_s"),
    ]
    for label, mode, key in rows:
        cells = []
        for k in KERNELS:
            values = [r[key][k] for r in results[mode]]
            cells.append(f"{min(values):.3f}-{max(values):.3f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
