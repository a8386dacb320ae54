"""numba against the C kernels: the neuron step and the fused neuron + max-pool, ported to ``@njit(parallel=True,
cache=True)``, checked against the C kernels' results, and timed.

    pip install numba                                          # not a dependency of the project
    python -m benchmarks.numba_kernels                         # kernels alone, and the first-call compile
    SNN_DATA_DIR=DIR python -m benchmarks.numba_kernels --train --repeats 5   # also training speed

Prints: (1) whether each numba kernel computes what its C kernel computes (spikes, voltages and pooled spikes
bit for bit, gradients to the tests' tolerance); (2) each kernel's time per call, C and numba, medians of
``--calls`` calls on the seed networks' shapes (threads: torch's); (3) numba's first-call cost in a new
process with an empty cache (compiling) and with the cache it left (loading); (4) with ``--train``, the
project's training images/s of both seed networks with the C kernels and with the numba ports put in their
place (the same Python code around them), in alternation, medians and ranges over ``--repeats``.
The docs (docs/kernels.md) quote its output.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

try:
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - the script says so and stops
    numba = None

F32 = np.float32
CHUNK = 4096  # neurons a parallel task of the neuron step takes


# ----------------------------------------------------------------------------- the ports


if numba is not None:  # the ports, compiled on first call (cache=True: into __pycache__ or NUMBA_CACHE_DIR)

    @njit(inline="always")
    def _surrogate(id_, x, alpha, scale, half_alpha):
        if id_ == 1:
            z = x * scale
            z = z * z + F32(1.0)
            return (F32(1.0) / z) * half_alpha
        sig = F32(1.0) / (F32(1.0) + np.exp(-(x * alpha)))
        return (F32(1.0) - sig) * sig * alpha

    @njit(inline="always")
    def _forward_range(lif, keep, x, xt, v, M, tau, threshold, spikes, charges, T, lo, hi):
        for t in range(T):
            x_t, s_t = x[t * xt : t * xt + M], spikes[t * M : (t + 1) * M]
            for i in range(lo, hi):
                vi = v[i]
                h = vi + (x_t[i] - vi) / tau if lif else vi + x_t[i]
                s = F32(1.0) if h >= threshold else F32(0.0)
                v[i] = h - h * s
                s_t[i] = s
                if keep:
                    charges[t * M + i] = h

    @njit(parallel=True, cache=True)
    def if_lif_forward(x, xt, v, T, M, tau, threshold, spikes, charges, keep):
        """Each case (IF or LIF, charges kept or not) its own loop, as neurons.c's literal arguments make them."""
        lif = tau != F32(0.0)
        for c in prange((M + CHUNK - 1) // CHUNK):
            lo, hi = c * CHUNK, min(M, (c + 1) * CHUNK)
            if lif and keep:
                _forward_range(True, True, x, xt, v, M, tau, threshold, spikes, charges, T, lo, hi)
            elif lif:
                _forward_range(True, False, x, xt, v, M, tau, threshold, spikes, charges, T, lo, hi)
            elif keep:
                _forward_range(False, True, x, xt, v, M, tau, threshold, spikes, charges, T, lo, hi)
            else:
                _forward_range(False, False, x, xt, v, M, tau, threshold, spikes, charges, T, lo, hi)

    @njit(parallel=True, cache=True)
    def if_lif_backward(grad_spikes, charges, carry, T, M, tau, threshold, id_, alpha, scale, half_alpha, grad_x):
        lif = tau != F32(0.0)
        for c in prange((M + CHUNK - 1) // CHUNK):
            lo, hi = c * CHUNK, min(M, (c + 1) * CHUNK)
            for t in range(T - 1, -1, -1):
                for i in range(lo, hi):
                    h = charges[t * M + i]
                    s = F32(1.0) if h >= threshold else F32(0.0)
                    dsdh = _surrogate(id_, h - threshold, alpha, scale, half_alpha)
                    grad_h = grad_spikes[t * M + i] * dsdh + carry[i] * ((F32(1.0) - s) - h * dsdh)
                    carry[i] = grad_h - grad_h / tau if lif else grad_h
                    grad_x[t * M + i] = grad_h / tau if lif else grad_h

    @njit(parallel=True, cache=True)
    def fire_pool_forward(x, xt, G, H, W, B, T, tau, threshold, out, v_last, keep_v):
        """One row pair (two rows of one g) a task: its 2x2 windows' four neurons through all T steps."""
        lif = tau != F32(0.0)
        H2, W2, row = H // 2, W // 2, W * B
        n = W2 * B
        step_out = G * H2 * n
        fired = 0
        for task in prange(G * H2):
            g, r = task // H2, task % H2
            base = (g * H + 2 * r) * row
            v = np.zeros(4 * n, dtype=np.float32)
            count = 0
            for t in range(T):
                at = base + t * xt
                for j in range(W2):
                    for b in range(B):
                        k = j * B + b
                        spiked = False
                        for corner in range(4):
                            cur = x[at + (corner // 2) * row + (corner % 2) * B + 2 * j * B + b]
                            vv = v[corner * n + k]
                            h = vv + (cur - vv) / tau if lif else vv + cur
                            s = h >= threshold
                            v[corner * n + k] = h - h * (F32(1.0) if s else F32(0.0))
                            if s:
                                spiked = True
                                count += 1
                        out[t * step_out + task * n + k] = F32(1.0) if spiked else F32(0.0)
            if keep_v:
                for j in range(W2):
                    for b in range(B):
                        k = j * B + b
                        for corner in range(4):
                            v_last[base + (corner // 2) * row + (corner % 2) * B + 2 * j * B + b] = v[corner * n + k]
            fired += count
        return fired

    @njit(parallel=True, cache=True)
    def fire_pool_backward(x, xt, G, H, W, B, T, tau, threshold, g_out, grad_x, id_, alpha, scale, half_alpha):
        """The charges recomputed per row pair, then the recurrence backwards with aten's argmax per window."""
        lif = tau != F32(0.0)
        H2, W2, row = H // 2, W // 2, W * B
        n = W2 * B
        step_g = G * H2 * n
        for task in prange(G * H2):
            g, r = task // H2, task % H2
            base = (g * H + 2 * r) * row
            h = np.empty((T, 4 * n), dtype=np.float32)
            carry = np.zeros(4 * n, dtype=np.float32)
            summed = np.zeros(4 * n, dtype=np.float32)
            for t in range(T):
                at = base + t * xt
                for j in range(W2):
                    for b in range(B):
                        k = j * B + b
                        for corner in range(4):
                            cur = x[at + (corner // 2) * row + (corner % 2) * B + 2 * j * B + b]
                            if t == 0:
                                vv = F32(0.0)
                            else:
                                hp = h[t - 1, corner * n + k]
                                vv = hp - hp * (F32(1.0) if hp >= threshold else F32(0.0))
                            h[t, corner * n + k] = vv + (cur - vv) / tau if lif else vv + cur
            for t in range(T - 1, -1, -1):
                for j in range(W2):
                    for b in range(B):
                        k = j * B + b
                        gk = g_out[t * step_g + task * n + k]
                        sa, sb = h[t, k] >= threshold, h[t, n + k] >= threshold
                        sc, sd = h[t, 2 * n + k] >= threshold, h[t, 3 * n + k] >= threshold
                        first = 0 if (sa or not (sb or sc or sd)) else (1 if sb else (2 if sc else 3))
                        for corner in range(4):
                            i = corner * n + k
                            ht = h[t, i]
                            s = F32(1.0) if ht >= threshold else F32(0.0)
                            dsdh = _surrogate(id_, ht - threshold, alpha, scale, half_alpha)
                            grad_s = gk if corner == first else F32(0.0)
                            grad_h = grad_s * dsdh + carry[i] * ((F32(1.0) - s) - ht * dsdh)
                            carry[i] = grad_h - grad_h / tau if lif else grad_h
                            gx = grad_h / tau if lif else grad_h
                            at = base + (corner // 2) * row + (corner % 2) * B + 2 * j * B + b
                            if xt:
                                grad_x[at + t * xt] = gx
                            elif t == T - 1:
                                summed[i] = gx
                            else:
                                summed[i] += gx
            if not xt:
                for j in range(W2):
                    for b in range(B):
                        for corner in range(4):
                            k = j * B + b
                            grad_x[base + (corner // 2) * row + (corner % 2) * B + 2 * j * B + b] = summed[
                                corner * n + k
                            ]


def _kernels():
    """The four numba ports: neuron forward and backward, fused neuron + max-pool forward and backward."""
    return if_lif_forward, if_lif_backward, fire_pool_forward, fire_pool_backward


# ----------------------------------------------------------------------------- the C kernels' interface


def _floats(address: int, count: int) -> np.ndarray:
    """The ``count`` floats at ``address`` as a numpy array (no copy)."""
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(address))


class NeuronsPort:
    """neurons.c's functions, as neurons.py calls them, computed by the numba ports."""

    def __init__(self, kernels):
        self.forward, self.backward = kernels[0], kernels[1]

    def if_lif_forward(self, x, xt, v, layer, spikes, charges, threads):
        T, M = layer.T, layer.M
        numba.set_num_threads(threads)
        self.forward(
            _floats(x, (T - 1) * xt + M),
            xt,
            _floats(v, M),
            T,
            M,
            F32(layer.tau),
            F32(layer.threshold),
            _floats(spikes, T * M),
            _floats(charges, T * M) if charges else np.empty(0, F32),
            bool(charges),
        )

    def if_lif_backward(self, grad_spikes, charges, carry, layer, sg, grad_x, threads):
        T, M = layer.T, layer.M
        numba.set_num_threads(threads)
        self.backward(
            _floats(grad_spikes, T * M),
            _floats(charges, T * M),
            _floats(carry, M),
            T,
            M,
            F32(layer.tau),
            F32(layer.threshold),
            sg.id,
            F32(sg.alpha),
            F32(sg.scale),
            F32(sg.half_alpha),
            _floats(grad_x, T * M),
        )


class FirePoolPort:
    """fire_pool.c's functions, as fire_pool.py calls them, computed by the numba ports."""

    def __init__(self, kernels):
        self.forward, self.backward = kernels[2], kernels[3]

    def fire_pool_forward(self, x, xt, layout, neuron, out, v_last, threads):
        G, H, W, B, T = layout.G, layout.H, layout.W, layout.B, neuron.T
        step = G * H * W * B
        numba.set_num_threads(threads)
        return int(
            self.forward(
                _floats(x, (T - 1) * xt + step),
                xt,
                G,
                H,
                W,
                B,
                T,
                F32(neuron.tau),
                F32(neuron.threshold),
                _floats(out, T * step // 4),
                _floats(v_last, step) if v_last else np.empty(0, F32),
                bool(v_last),
            )
        )

    def fire_pool_backward(self, x, xt, layout, neuron, g, grad_x, sg, threads):
        G, H, W, B, T = layout.G, layout.H, layout.W, layout.B, neuron.T
        step = G * H * W * B
        numba.set_num_threads(threads)
        self.backward(
            _floats(x, (T - 1) * xt + step),
            xt,
            G,
            H,
            W,
            B,
            T,
            F32(neuron.tau),
            F32(neuron.threshold),
            _floats(g, T * step // 4),
            _floats(grad_x, (T - 1) * xt + step if xt else step),
            sg.id,
            F32(sg.alpha),
            F32(sg.scale),
            F32(sg.half_alpha),
        )
        return 0


def use(ports: dict | None) -> None:
    """Put the numba ports in the C kernels' place (``ports``), or the C kernels back (None)."""
    from snn.fastpath import fire_pool, native, neurons

    for kernels in (neurons._KERNELS, fire_pool._KERNELS):
        native._loaded.pop(kernels.source_name, None)
        kernels.get()  # the C library, built and checked
    if ports is not None:
        native._loaded.update(ports)


# ----------------------------------------------------------------------------- checks and timings


def check(ports: dict) -> list[str]:
    """The numba ports against the C kernels on the known-answer checks' cases: [] when they agree."""
    from snn.fastpath import fire_pool, neurons

    errors = []
    for source, module in (("neurons.c", neurons), ("fire_pool.c", fire_pool)):
        error = module._known_answer(ports[source])
        if error:
            errors.append(f"{source} port: {error}")
    return errors


def _median_ms(fn, calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def kernel_times(ports: dict, calls: int) -> dict:
    """ms per forward + backward of each kernel on the seed networks' shapes, C and numba."""
    from spikingjelly.activation_based import functional

    from snn.fastpath import FastMaxPool2d, fire_and_pool, native
    from tests.snn.test_fast_paths import pair

    torch.manual_seed(0)
    cases = {
        "FC-SNN LIF layer [100, 128, 10], forward + backward": (
            lambda: pair("lif", "atan")[0],
            torch.randn(100, 128, 10) * 1.5 + 0.4,
            None,
        ),
        "CSNN fc1 IF layer [4, 128, 1024], forward + backward": (
            lambda: pair("if", "atan")[0],
            torch.randn(4, 128, 1024) * 1.5 + 0.4,
            None,
        ),
        "CSNN block 1: IF + max-pool, [128, 64, 28, 28] over 4 steps, forward + backward": (
            lambda: pair("if", "atan")[0],
            torch.randn(128, 64, 28, 28) * 1.5 + 0.4,
            4,
        ),
        "CSNN block 2: IF + max-pool, [4, 128, 64, 14, 14], forward + backward": (
            lambda: pair("if", "atan")[0],
            torch.randn(4, 128, 64, 14, 14) * 1.5 + 0.4,
            "pool",
        ),
        "CSNN block 1, inference (channels_last), forward": (
            lambda: pair("if", "atan")[0],
            (torch.randn(128, 64, 28, 28) * 1.5 + 0.4).contiguous(memory_format=torch.channels_last),
            "inference",
        ),
    }
    times = {}
    for name, (make, x, mode) in cases.items():
        node, pool = make(), FastMaxPool2d(2, step_mode="m")
        leaf = x.clone().requires_grad_()

        def step():
            functional.reset_net(node)
            if mode is None:
                node(leaf).sum().backward()
            elif mode == "inference":
                with torch.no_grad():
                    fire_and_pool(node, pool, x, steps=4)
            else:
                fire_and_pool(node, pool, leaf, steps=mode if isinstance(mode, int) else None).sum().backward()

        times[name] = {}
        for label, replacement in (("C", None), ("numba", ports), ("C again", None), ("numba again", ports)):
            use(replacement)
            times[name][label] = _median_ms(step, calls)
        assert native._loaded["fire_pool.c"] is not None
    use(None)
    return times


FIRST_CALL = """
import json, sys, time
import torch
from spikingjelly.activation_based import neuron, surrogate
from snn.fastpath import fire_pool, neurons
x = torch.randn(2, 3, requires_grad=True)  # spikingjelly's lazy imports, paid before the timing
neuron.IFNode(surrogate_function=surrogate.ATan(), step_mode="m")(x).sum().backward()
fire_pool._known_answer(fire_pool._KERNELS.get()), neurons._known_answer(neurons._KERNELS.get())
start = time.perf_counter()
from benchmarks.numba_kernels import _kernels, check, NeuronsPort, FirePoolPort
kernels = _kernels()
imported = time.perf_counter() - start
start = time.perf_counter()
errors = check({"neurons.c": NeuronsPort(kernels), "fire_pool.c": FirePoolPort(kernels)})
numba_s = time.perf_counter() - start
start = time.perf_counter()
check({"neurons.c": neurons._KERNELS.get(), "fire_pool.c": fire_pool._KERNELS.get()})
print(json.dumps({"import_s": imported, "first_calls_s": numba_s, "same_with_c_s": time.perf_counter() - start,
                  "errors": errors}))
"""


def first_calls(cache: str) -> dict:
    """numba's cost on a process's first calls of the four ports (the known-answer cases), with NUMBA_CACHE_DIR=cache."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def training_speed(ports: dict, repeats: int) -> dict:
    """Training images/s of the project's trainer, both seed networks, with the C kernels and with the numba ports."""
    from benchmarks.train_speed import DEFAULT_BATCHES, project_training
    from snn.allocator import keep_freed_memory
    from snn.data import default_data_dir, read_dataset

    keep_freed_memory()
    data = read_dataset(default_data_dir(), download=False)
    samples = {m: {"C": [], "numba": []} for m in ("fc", "csnn")}
    for r in range(repeats):
        for m in ("fc", "csnn"):
            for label, replacement in (
                (("C", None), ("numba", ports)) if r % 2 == 0 else (("numba", ports), ("C", None))
            ):
                use(replacement)
                seconds, images, _ = project_training(m, data, torch.device("cpu"), 2, DEFAULT_BATCHES[m])
                samples[m][label].append(images / seconds)
        print(
            f"repeat {r + 1}/{repeats}: "
            + ", ".join(f"{m} {k} {v[-1]:.0f}" for m, s in samples.items() for k, v in s.items())
            + " img/s",
            file=sys.stderr,
            flush=True,
        )
    use(None)
    return {
        m: {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in s.items()}
        for m, s in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.numba_kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=15, help="timed calls per kernel and side (medians)")
    parser.add_argument("--train", action="store_true", help="also the training speed with each (needs MNIST)")
    parser.add_argument("--repeats", type=int, default=5, help="alternations of C and numba with --train")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if numba is None:
        parser.exit(2, "python -m benchmarks.numba_kernels: error: numba is not installed (pip install numba)\n")
    result = {"numba": numba.__version__, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as cache:
        result["first_process"] = first_calls(cache)  # compiles, and writes the cache
        result["second_process"] = first_calls(cache)  # loads from the cache
    kernels = _kernels()
    ports = {"neurons.c": NeuronsPort(kernels), "fire_pool.c": FirePoolPort(kernels)}
    result["check"] = check(ports) or "the numba ports compute what the C kernels compute (known-answer cases)"
    result["kernel_ms"] = kernel_times(ports, args.calls)
    if args.train:
        result["training_images_per_s"] = training_speed(ports, args.repeats)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"numba {result['numba']}, {result['threads']} threads")
    print(f"check: {result['check']}")
    for label in ("first_process", "second_process"):
        r = result[label]
        print(
            f"{label.replace('_', ' ')}: import {r['import_s']:.2f} s, the known-answer cases through the numba "
            f"ports {r['first_calls_s']:.2f} s (through the loaded C kernels {r['same_with_c_s']:.2f} s)"
            + (f", errors {r['errors']}" if r["errors"] else "")
        )
    print("\n| kernel (forward + backward unless said) | C ms | numba ms | numba / C |\n| --- | ---: | ---: | ---: |")
    for name, t in result["kernel_ms"].items():
        c, nb = min(t["C"], t["C again"]), min(t["numba"], t["numba again"])
        print(f"| {name} | {c:.2f} | {nb:.2f} | {nb / c:.2f}x |")
    if args.train:
        print(
            "\n| training images/s | C: median (range) | numba: median (range) | numba / C |\n| --- | ---: | ---: | ---: |"
        )
        for m, s in result["training_images_per_s"].items():
            c, nb = s["C"], s["numba"]
            print(
                f"| {m} | {c['median']:,.0f} ({c['min']:,.0f}-{c['max']:,.0f}) | {nb['median']:,.0f} "
                f"({nb['min']:,.0f}-{nb['max']:,.0f}) | {nb['median'] / c['median']:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
