"""Command lines run in forked children of an interpreter that imported their libraries once (tests/bad_input.py).

``python -m tests.case_server`` imports torch, spikingjelly and Optuna, then reads one JSON request per line
on stdin, ``{"module", "args", "cwd", "stdout", "stderr"}``, and runs ``python -m module args`` for it in a
forked child: its working folder ``cwd``, its stdin empty, its stdout and stderr written to the two files
named. It answers each request with one line, ``{"returncode": N}``, once the child has ended.

A fresh interpreter spends about 1.5 s of CPU importing torch before a command reads its first flag; a
bad-input case ends soon after, so most of its time was that import. The child runs the command's module
as ``-m`` would (``runpy``, as ``__main__``), its exit code is what ``SystemExit`` carries, an uncaught
exception prints its traceback and exits 1, and the atexit handlers run before the child ends, as at a
fresh interpreter's exit. What importing the libraries prints happens once, in this process:
``run_cases`` runs each command's first case in a fresh interpreter, where that output would show.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
import time
import traceback

PRELOADED = ("torch", "spikingjelly.activation_based.neuron", "optuna")
TIMEOUT_S = 300  # a command still running then is killed


def main() -> None:
    for name in PRELOADED:
        __import__(name)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(request)  # never returns
        print(json.dumps({"returncode": _wait(pid)}), flush=True)


def _wait(pid: int) -> int:
    """The child's exit code; a child still running after TIMEOUT_S is killed (-9), as subprocess's timeout would."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        time.sleep(0.005)


def _run_child(request: dict) -> None:
    code = 1
    try:
        _redirect(0, os.devnull, os.O_RDONLY)
        sys.stdin = open(os.devnull)  # not the requests this process read ahead
        _redirect(1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        _redirect(2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.chdir(request["cwd"])
        sys.argv = [request["module"], *request["args"]]
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = _exit_code(e.code)
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _redirect(fd: int, path: str, flags: int) -> None:
    target = os.open(path, flags, 0o600)
    os.dup2(target, fd)
    os.close(target)


def _exit_code(code) -> int:
    """The exit status ``SystemExit(code)`` gives a Python process: None 0, an int itself, anything else printed, 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()
