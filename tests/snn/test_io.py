"""Atomic result files: content, permissions under the umask, flushed to disk before the rename."""

from __future__ import annotations

import os
import stat

import pytest

import snn.io
from snn.io import write_csv, write_json, write_text


@pytest.fixture
def umask():
    """Set the process's umask for one test, and put the old one back."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_written_file_has_the_mode_the_umask_gives_a_new_file(tmp_path, umask, mask, mode):
    umask(mask)
    write_text(tmp_path / "summary.txt", "hello\n")
    assert stat.S_IMODE((tmp_path / "summary.txt").stat().st_mode) == mode


def test_overwriting_keeps_the_content_whole_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "deep" / "folder" / "result.json"
    write_json(path, {"acc": 0.5})
    write_json(path, {"acc": 0.75, "epochs": [1, 2]})
    assert path.read_text() == '{\n  "acc": 0.75,\n  "epochs": [\n    1,\n    2\n  ]\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_csv_columns_are_the_union_of_the_rows_keys_in_first_seen_order(tmp_path):
    write_csv(tmp_path / "m.csv", [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "acc": 0.9}])
    assert (tmp_path / "m.csv").read_text() == "epoch,loss,acc\n1,0.5,\n2,,0.9\n"


def test_the_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(snn.io.os, "fsync", fsync)
    monkeypatch.setattr(snn.io.os, "replace", replace)
    write_text(tmp_path / "a.txt", "x")
    assert events == [("fsync", "file"), ("replace", "a.txt"), ("fsync", "folder")]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    write_text(path, "old\n")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(snn.io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
