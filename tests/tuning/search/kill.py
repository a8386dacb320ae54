"""SIGKILL a search and every process it started, the way a crash or ``kill -9`` ends it.

Ray's workers run in process groups of their own, so killing the command's group leaves them:
an orphaned trial finishes its epoch and writes its checkpoint into the experiment after the
command is gone. ``kill_search`` takes the group and every descendant, and waits until all are
gone, so what is on disk afterwards is final.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import ray  # noqa: F401  (Ray puts its vendored psutil on sys.path; psutil is not a dependency of ours)

import psutil  # noqa: E402  isort: skip


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_search(process: subprocess.Popen, timeout: float = 60) -> int:
    """SIGKILL the search's process group and all its descendants; returns how many processes were killed."""
    tree = descendants(process.pid)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=30)
    gone, alive = psutil.wait_procs(tree, timeout=timeout)
    if alive:
        raise AssertionError(f"still alive {timeout} s after SIGKILL: {[p.pid for p in alive]}")
    deadline = time.time() + timeout
    while time.time() < deadline:  # stragglers forked into the group while it was being killed
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    return 1 + len(tree)
