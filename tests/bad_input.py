"""Running a CLI on bad input, many at once: exit code, stderr, and what the run changed on disk."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """A bad input: the CLI's arguments (``{case}`` is the case's folder) and a fragment of the one error line."""

    module: str
    args: tuple[str, ...]
    fragment: str
    setup: Callable[[Path], None] | None = None  # prepares the case's folder before the run


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    before: dict
    after: dict


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder``: its kind, mode, size and content digest (mtimes of folders aside)."""
    found = {}
    for root, folders, names in os.walk(folder):
        for name in folders + names:
            path = Path(root, name)
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else None
            found[str(path.relative_to(folder))] = (info.st_mode, info.st_size if digest else None, digest)
    return found


def run_cases(cases: dict[str, Case], base: Path, env: dict[str, str], workers: int = 3) -> dict[str, Outcome]:
    """Run every case in its own folder under ``base`` (its working directory), ``workers`` at a time."""

    def run(item: tuple[str, Case]) -> tuple[str, Outcome]:
        name, case = item
        folder = base / name
        folder.mkdir(parents=True)
        if case.setup:
            case.setup(folder)
        before = snapshot(folder)
        args = [a.replace("{case}", str(folder)) for a in case.args]
        result = subprocess.run(
            [sys.executable, "-m", case.module, *args],
            cwd=folder,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            timeout=300,
        )
        return name, Outcome(result.returncode, result.stdout, result.stderr, before, snapshot(folder))

    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(run, cases.items()))


def assert_refused(outcome: Outcome, fragment: str) -> None:
    """Exit code 2, one line on stderr holding ``fragment``, nothing on stdout, nothing on disk changed."""
    assert outcome.returncode == 2, outcome.stderr[-3000:]
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr[-3000:]
    assert "Traceback" not in outcome.stderr
    assert fragment in lines[0], lines[0]
    assert outcome.stdout == ""
    assert outcome.after == outcome.before


class RunsCodeWhenUnpickled:
    """Unpickling this creates the file ``marker``: what a crafted pickle (a checkpoint loaded without
    weights_only, a tuner.pkl) could do instead of restoring what it claims to hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)
