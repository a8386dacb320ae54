"""Running a CLI on bad input, many at once: exit code, stderr, and what the run changed on disk."""

from __future__ import annotations

import hashlib
import json
import os
import queue
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
    """Run every case in its own folder under ``base`` (its working directory), ``workers`` at a time.

    The first case of each module runs in a fresh interpreter, as a user runs it (what importing prints
    is part of its output); the others in forked children of ``tests.case_server`` processes, which
    imported torch once (a fresh interpreter's import is most of a refused command's time)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    first_of_module: dict[str, str] = {}
    for name, case in cases.items():
        first_of_module.setdefault(case.module, name)
    fresh = set(first_of_module.values())
    servers: queue.Queue[_CaseServer] = queue.Queue()

    def run(item: tuple[str, Case]) -> tuple[str, Outcome]:
        name, case = item
        folder = base / name
        folder.mkdir(parents=True)
        if case.setup:
            case.setup(folder)
        before = snapshot(folder)
        args = [a.replace("{case}", str(folder)) for a in case.args]
        if name in fresh:
            result = subprocess.run(
                [sys.executable, "-m", case.module, *args],
                cwd=folder,
                capture_output=True,
                text=True,
                env=environment,
                timeout=300,
            )
            returncode, stdout, stderr = result.returncode, result.stdout, result.stderr
        else:
            server = servers.get()
            try:
                returncode, stdout, stderr = server.run(case.module, args, folder, base / f".{name}")
            finally:
                servers.put(server)
        return name, Outcome(returncode, stdout, stderr, before, snapshot(folder))

    started = [_CaseServer(environment) for _ in range(min(workers, len(cases) - len(fresh)))]
    for server in started:
        servers.put(server)
    try:
        with ThreadPoolExecutor(workers) as pool:
            return dict(pool.map(run, cases.items()))
    finally:
        for server in started:
            server.close()


class _CaseServer:
    """A ``tests.case_server`` process: one command at a time, each in a forked child."""

    def __init__(self, environment: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.case_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
            cwd=REPO,
        )

    def run(self, module: str, args: list[str], cwd: Path, scratch: Path) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of ``python -m module args`` in ``cwd``; its output passes through
        files beside ``cwd`` (``scratch``.out/.err), never inside it."""
        out, err = Path(f"{scratch}.out"), Path(f"{scratch}.err")
        request = {"module": module, "args": args, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"tests.case_server ended (exit code {self.process.wait()}) running {module} {args}")
        return json.loads(answer)["returncode"], out.read_text(), err.read_text()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


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
