"""tests.case_server runs a command as a fresh interpreter does: same exit code, same stdout, same stderr."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.bad_input import REPO, _CaseServer

COMMANDS = {
    "a refused flag": ("tuning.search", ["fc", "--results-dir", "results", "--no-dashboard", "--seed", "-1"]),
    "an uncaught exception": ("tests.raises_on_run", []),
    "SystemExit with a message": ("json.tool", ["bad.json"]),
    "success with output": ("json.tool", ["ok.json"]),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_forked_command_answers_as_a_fresh_interpreter(tmp_path, name):
    module, args = COMMANDS[name]
    (tmp_path / "results").mkdir()
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}\n')
    (tmp_path / "bad.json").write_text("{bad\n")
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    fresh = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True, env=environment
    )
    server = _CaseServer(environment)
    try:
        forked = server.run(module, args, tmp_path, tmp_path.parent / f"{tmp_path.name}-scratch")
    finally:
        server.close()
    code, out, err = forked
    assert (code, out) == (fresh.returncode, fresh.stdout)
    if name == "an uncaught exception":  # the same traceback but for the frames of the server's own call
        ends = ["Traceback (most recent call last):", "LookupError: raised on purpose"]
        assert [err.splitlines()[i] for i in (0, -1)] == [fresh.stderr.splitlines()[i] for i in (0, -1)] == ends
    else:
        assert err == fresh.stderr
    assert fresh.returncode == {"a refused flag": 2, "success with output": 0}.get(name, 1)
