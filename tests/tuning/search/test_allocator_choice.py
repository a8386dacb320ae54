"""The search command and each trial keep freed memory in their processes (snn/allocator.py); train() does not."""

from __future__ import annotations

import pytest

from tuning.search import cli, trial


def test_the_search_command_keeps_freed_memory_before_anything_else(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("kept"))
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert calls == ["kept"]


def test_a_trial_keeps_freed_memory_before_it_trains(monkeypatch):
    calls = []
    monkeypatch.setattr(trial, "keep_freed_memory", lambda: calls.append("kept"))

    class Unfinished:  # a setup that stops the trial at its first use
        def __getattr__(self, name):
            calls.append(name)
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        trial.run_trial({}, Unfinished(), None)
    assert calls[:2] == ["kept", "cpus_per_trial"]
