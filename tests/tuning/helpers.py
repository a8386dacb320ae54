"""Running the search CLI from tests: a subprocess with the data folder and a free dashboard port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAULTY_SEARCH = "tests.tuning.search.faulty_search"  # the CLI with a trial that can crash or pause on request


def search_command(model: str, results_dir: Path, name: str, *flags: str, module: str = "tuning.search") -> list[str]:
    return [sys.executable, "-m", module, model, "--results-dir", str(results_dir), "--name", name, *flags]


def start_search(command: list[str], data_root: Path, log: Path, **env: str) -> subprocess.Popen:
    """Start the CLI in its own process group (so a test can kill it and its Ray workers)."""
    environment = {**os.environ, "SNN_DATA_DIR": str(data_root), **env}
    return subprocess.Popen(
        command, cwd=REPO, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
