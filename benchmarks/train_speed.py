"""Training and evaluation speed of the project's trainer against the seed's loop, same machine, same run.

    python -m benchmarks.train_speed                  # both models on the CPU, table
    python -m benchmarks.train_speed --model fc --repeats 5 --json
    python -m benchmarks.train_speed --device cuda    # adds 1/2/4/8/16 concurrent trials on one GPU

For each model (FC-SNN T=100, CSNN C=64 T=4, batch 128) and each repeat, in turn: the seed's
loop (``benchmarks.seed_reference``) and the project's ``snn.training.train`` are timed over
a fixed number of training batches after a warm-up, then the seed's test loop and
``snn.training.evaluate`` over the same number of test images. Figures are medians over
the repeats; ratios are project / reference. Peak memory is the rise of the process's
resident memory over its level before the phase (CPU; each phase in a fresh process, the
reference's DataLoader worker not counted) or ``torch.cuda.max_memory_allocated`` (GPU).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

from snn.allocator import keep_freed_memory
from snn.config import RunConfig
from snn.data import DataError, default_data_dir, make_splits, read_dataset
from snn.networks import build_model
from snn.training import EVAL_BATCH_SIZE, evaluate, train

from . import seed_reference

BATCH = 128
T_OF = {"fc": 100, "csnn": 4}
DEFAULT_BATCHES = {"fc": 20, "csnn": 4}  # timed training batches (also test batches) per repeat
CONCURRENT_TRIALS = (1, 2, 4, 8, 16)


# ----------------------------------------------------------------------------- one measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _project_config(model: str, device: torch.device, n_train: int) -> RunConfig:
    return RunConfig(model=model, epochs=1, limit_train=n_train, limit_test=1, device=device.type)


def project_training(model: str, data, device: torch.device, warmup: int, batches: int):
    """(seconds, images, trained model) of ``batches`` batches of ``snn.training.train`` after ``warmup``."""
    config = _project_config(model, device, (warmup + batches) * BATCH)
    splits = make_splits(data, limit_train=config.limit_train, limit_test=1, device=device)
    stamps: dict[str, float] = {}
    kept: dict[str, torch.nn.Module] = {}

    def on_batch(i: int, _n: int, _loss: float) -> None:
        if i in (warmup - 1, warmup + batches - 1):
            _sync(device)
            stamps["start" if i == warmup - 1 else "end"] = time.perf_counter()

    train(config, splits, on_batch=on_batch, on_epoch=lambda _r, state: kept.setdefault("model", state.model))
    return stamps["end"] - stamps["start"], batches * BATCH, kept["model"]


def project_evaluation(model: str, net: torch.nn.Module, data, device: torch.device, batches: int):
    """(seconds, images) of ``snn.training.evaluate`` on ``batches`` x 128 test images, after a warm-up."""
    config = _project_config(model, device, BATCH)
    split = make_splits(data, limit_test=batches * BATCH, device=device).test
    evaluate(net, split.head(BATCH), config)  # warm-up
    _sync(device)
    start = time.perf_counter()
    evaluate(net, split, config)
    return time.perf_counter() - start, len(split)


# ----------------------------------------------------------------------------- peak memory


class _RssPeak:
    """Samples this process's resident memory every millisecond in a thread; ``peak_mb`` above the start."""

    def __enter__(self):
        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())
        self.peak_mb = (self.peak - self.base) / 2**20
        self.total_mb = self.peak / 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_phase(model: str, side: str, phase: str, device: torch.device, root: str, batches: int) -> dict:
    """Peak memory (MB) of one phase (train or eval, reference or project) of ``batches`` batches."""
    data = read_dataset(root, download=False) if side == "project" else None
    loaders = seed_reference.loaders(root, BATCH) if side == "reference" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with _RssPeak() as rss:
        if side == "reference":
            loader = loaders[0] if phase == "train" else loaders[1]
            timer = seed_reference.time_training if phase == "train" else seed_reference.time_evaluation
            timer(model, loader, device, T_OF[model], 1, batches)
        elif phase == "train":
            project_training(model, data, device, 1, batches)
        else:  # an untrained network, as the reference's evaluation uses: same work, no training peak
            net = build_model(_project_config(model, device, BATCH)).to(device)
            project_evaluation(model, net, data, device, batches)
    if device.type == "cuda":
        return {"peak_mb": (torch.cuda.max_memory_allocated(device) - base) / 2**20}
    return {"peak_mb": rss.peak_mb, "process_peak_mb": rss.total_mb}


def peak_memory(model: str, side: str, phase: str, device: torch.device, root: str) -> dict:
    """run_phase in a fresh process on the CPU (so freed heap from earlier phases cannot hide a peak)."""
    if device.type == "cuda":
        return run_phase(model, side, phase, device, root, 2)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.train_speed",
            "--probe",
            model,
            side,
            phase,
            "--device",
            "cpu",
            "--data-dir",
            root,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- concurrent GPU trials


def _concurrent_worker(model, root, batches, barrier, results, device_name="cuda"):
    device = torch.device(device_name)
    data = read_dataset(root, download=False)
    config = _project_config(model, device, (2 + batches) * BATCH)
    splits = make_splits(data, limit_train=config.limit_train, limit_test=1, device=device)
    stamps = {}

    def on_batch(i, _n, _loss):
        if i == 1:
            _sync(device)
            barrier.wait()
            stamps["start"] = time.time()
        if i == 1 + batches:
            _sync(device)
            stamps["end"] = time.time()

    train(config, splits, on_batch=on_batch)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    results.put((stamps["start"], stamps["end"], batches * BATCH, peak))


def concurrent_training(model: str, root: str, trials: int, batches: int, device: str = "cuda") -> dict:
    """``trials`` processes training at once on one GPU (or ``device``).

    Returns the aggregate training images/s (all images over the span from the first start to
    the last end) and the largest peak of GPU memory one trial allocated, in MB (0 on a CPU).
    """
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(trials), ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_worker, args=(model, root, batches, barrier, results, device))
        for _ in range(trials)
    ]
    for p in procs:
        p.start()
    spans = [results.get(timeout=1200) for _ in procs]
    for p in procs:
        p.join()
    seconds = max(e for _, e, _, _ in spans) - min(s for s, _, _, _ in spans)
    return {
        "images_per_s": sum(n for _, _, n, _ in spans) / seconds,
        "peak_mb_per_trial": max(peak for *_, peak in spans) / 2**20,
    }


# ----------------------------------------------------------------------------- the benchmark


def benchmark(
    models, device: torch.device, root: str, data, batches: dict, repeats: int, warmup: int, memory: bool, log
) -> dict:
    """The table's figures; ``data``: the splits under ``root`` (``read_dataset``), read by the caller."""
    # the project's trainer keeps freed memory in the process (snn.allocator); set from the start, the
    # seed's loop runs with it too, so the ratios compare the two loops' code, not the allocator's
    keep_freed_memory()
    train_loader, test_loader = seed_reference.loaders(root, BATCH)
    samples = {m: {k: [] for k in ("ref_train", "proj_train", "ref_eval", "proj_eval")} for m in models}
    for r in range(repeats):
        for m in models:
            b, s = batches[m], samples[m]
            sec, n = seed_reference.time_training(m, train_loader, device, T_OF[m], warmup, b)
            s["ref_train"].append(n / sec)
            sec, n, net = project_training(m, data, device, warmup, b)
            s["proj_train"].append(n / sec)
            sec, n = seed_reference.time_evaluation(m, test_loader, device, T_OF[m], 1, b)
            s["ref_eval"].append(n / sec)
            sec, n = project_evaluation(m, net, data, device, b)
            s["proj_eval"].append(n / sec)
            log(f"repeat {r + 1}/{repeats} {m}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in s.items()) + " img/s")
    result = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": BATCH,
        "repeats": repeats,
        "warmup_batches": warmup,
        "eval_batch_size": {"reference": BATCH, "project": EVAL_BATCH_SIZE},
        "models": {},
    }
    for m in models:
        med = {k: statistics.median(v) for k, v in samples[m].items()}
        entry = {
            "T": T_OF[m],
            "timed_batches": batches[m],
            "samples_images_per_s": samples[m],
            "train_images_per_s": {
                "reference": med["ref_train"],
                "project": med["proj_train"],
                "ratio": med["proj_train"] / med["ref_train"],
            },
            "eval_images_per_s": {
                "reference": med["ref_eval"],
                "project": med["proj_eval"],
                "ratio": med["proj_eval"] / med["ref_eval"],
            },
        }
        if m == "csnn":
            entry["channels"] = 64
        if memory:
            for phase in ("train", "eval"):
                ref = peak_memory(m, "reference", phase, device, root)
                proj = peak_memory(m, "project", phase, device, root)
                entry[f"{phase}_peak_mb"] = {
                    "reference": ref["peak_mb"],
                    "project": proj["peak_mb"],
                    "ratio": proj["peak_mb"] / max(ref["peak_mb"], 1e-9),
                }
                if "process_peak_mb" in proj:
                    entry[f"{phase}_process_peak_mb"] = {
                        "reference": ref["process_peak_mb"],
                        "project": proj["process_peak_mb"],
                    }
            log(f"{m}: peak memory measured")
        result["models"][m] = entry
    if device.type == "cuda":
        result["concurrent_trials"] = {}
        for m in models:
            result["concurrent_trials"][m] = {
                str(k): concurrent_training(m, root, k, batches[m]) for k in CONCURRENT_TRIALS
            }
            log(f"{m}: concurrent trials measured")
    else:
        result["concurrent_trials"] = None
    return result


def format_table(result: dict) -> str:
    names = {"fc": "FC-SNN (T=100)", "csnn": "CSNN (C=64, T=4)"}
    lines = [
        f"device {result['device']}, torch {result['torch']}, {result['threads']} threads, batch "
        f"{result['batch_size']}, median of {result['repeats']} repeats",
        "",
        "| model | measure | reference (seed loop) | project | project / reference |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for m, e in result["models"].items():
        rows = [
            ("training images/s", "train_images_per_s", "{:,.0f}"),
            ("evaluation images/s", "eval_images_per_s", "{:,.0f}"),
            ("peak memory, training (MB)", "train_peak_mb", "{:,.0f}"),
            ("peak memory, evaluation (MB)", "eval_peak_mb", "{:,.0f}"),
        ]
        for label, key, fmt in rows:
            if key in e:
                v = e[key]
                lines.append(
                    f"| {names[m]} | {label} | {fmt.format(v['reference'])} | "
                    f"{fmt.format(v['project'])} | {v['ratio']:.2f}x |"
                )
    if result.get("concurrent_trials"):
        lines += [
            "",
            "| model | concurrent trials on one GPU | aggregate training images/s | peak GPU memory per trial (MB) |",
            "| --- | ---: | ---: | ---: |",
        ]
        for m, per in result["concurrent_trials"].items():
            lines += [
                f"| {names[m]} | {k} | {v['images_per_s']:,.0f} | {v['peak_mb_per_trial']:,.0f} |"
                for k, v in per.items()
            ]
    elif result["device"] == "cpu":
        lines += ["", "concurrent trials on one GPU: skipped (needs --device cuda)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("fc", "csnn", "both"), default="both")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--batches",
        type=int,
        default=None,
        help="timed training (and test) batches per repeat (default: fc 20, csnn 4)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed training batches first (>= 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory phases")
    parser.add_argument(
        "--data-dir", default=None, help="folder holding MNIST/raw (default $SNN_DATA_DIR, else ./data)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--probe", nargs=3, metavar=("MODEL", "SIDE", "PHASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "python -m benchmarks.train_speed: error: --device cuda but no GPU is visible\n")
    root = str(args.data_dir or default_data_dir())
    if args.probe:
        model, side, phase = args.probe
        print(json.dumps(run_phase(model, side, phase, device, root, 2)))
        return 0
    if args.warmup < 1 or args.repeats < 1 or (args.batches is not None and args.batches < 1):
        parser.exit(2, "python -m benchmarks.train_speed: error: --warmup, --repeats and --batches must be >= 1\n")
    models = ("fc", "csnn") if args.model == "both" else (args.model,)
    batches = {m: args.batches or DEFAULT_BATCHES[m] for m in models}
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    try:
        data = read_dataset(root, download=False)  # missing or broken files: one line, before anything runs
    except DataError as e:
        parser.exit(2, f"python -m benchmarks.train_speed: error: {e}\n")
    result = benchmark(models, device, root, data, batches, args.repeats, args.warmup, not args.no_memory, log)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
