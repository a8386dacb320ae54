"""keep_freed_memory: a large block freed and asked for again comes back without page faults."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap

import pytest

from snn import allocator
from tests.tuning.helpers import REPO

# malloc, touch and free a 103 MB block (a CSNN batch's spikes) three times: the page faults of each touch
PROBE = textwrap.dedent("""
    import ctypes, json, resource
    from snn import allocator
    kept = allocator.keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    size, faults = 103 * 2**20, []
    for _ in range(3):
        block = libc.malloc(size)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ctypes.memset(block, 1, size)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        libc.free(block)
    print(json.dumps({"kept": kept, "faults": faults}))
""")


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(ctypes.CDLL(None).gnu_get_libc_version)
    except (OSError, AttributeError):
        return False


def probe(switch: str) -> dict:
    env = {**os.environ, allocator.ENV_SWITCH: switch}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _glibc(), reason="mallopt's thresholds are glibc's")
def test_a_large_block_comes_back_without_page_faults_and_the_switch_turns_that_off():
    on, off = probe("1"), probe("0")
    pages = 103 * 2**20 // 4096  # 26,368 pages of 4 KB
    assert on["kept"] and max(on["faults"][1:]) < pages // 10, on  # reused from the heap
    assert not off["kept"] and min(off["faults"]) > pages // 2, off  # glibc's own: a fresh mmap each time


def test_once_per_process():
    first = allocator.keep_freed_memory()
    assert allocator.keep_freed_memory() == first


def test_train_and_evaluate_leave_malloc_as_it_is():
    """A library caller's process: train() and evaluate() never change malloc's thresholds (the commands do)."""
    script = textwrap.dedent("""
        import torch
        from snn import allocator
        from snn.config import RunConfig
        from snn.data import Dataset, Split
        from snn.training import train
        g = torch.Generator().manual_seed(0)
        images, labels = (torch.rand(256, 1, 28, 28, generator=g) * 255).to(torch.uint8), torch.arange(256) % 10
        train(RunConfig(model="fc", net={"T": 2}, epochs=1, device="cpu"), Dataset(Split(images, labels), Split(images, labels)))
        print(allocator._kept)
    """)
    env = {**os.environ, allocator.ENV_SWITCH: "1"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_python_m_snn_train_keeps_freed_memory_before_anything_else(monkeypatch):
    from snn import train as command

    calls = []
    monkeypatch.setattr(command, "keep_freed_memory", lambda: calls.append("kept"))
    with pytest.raises(SystemExit):
        command.main(["--help"])
    assert calls == ["kept"]
