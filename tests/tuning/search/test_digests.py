"""The resume key, the digests of a search's pickles, and the file system that writes and checks them (no Ray)."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pyarrow.fs
import pytest

from tuning.search import digests
from tuning.search.digests import UntrustedPickle, ensure_key, is_pickled, load_key, signed_filesystem


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    """An empty configuration folder: the user has no key yet."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture
def tune(tmp_path) -> Path:
    (tmp_path / "exp" / "tune").mkdir(parents=True)
    return tmp_path / "exp" / "tune"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def write(fs, path: Path, data: bytes) -> None:
    with fs.open_output_stream(str(path)) as f:
        f.write(data)


def read(fs, path: Path) -> bytes:
    with fs.open_input_file(str(path)) as f:
        return f.readall()


def test_the_first_search_makes_a_private_key_and_later_ones_use_it(config):
    key = ensure_key()
    assert len(key) == 32 and ensure_key() == key == load_key()
    assert mode(config / "snn-tune") == 0o700 and mode(config / "snn-tune" / "resume.key") == 0o600
    assert os.listdir(config / "snn-tune") == ["resume.key"]  # no temporary left behind


@pytest.mark.parametrize(
    "weakness, message",
    [
        ("key-readable", "resume.key is mode 0644: others could read or replace it (chmod 600 it)"),
        ("folder-writable", "the resume key folder"),
        ("key-a-link", "cannot be read (Too many levels of symbolic links)"),
        ("key-short", "is not 32 bytes in hexadecimal"),
    ],
)
def test_a_key_others_could_read_or_replace_is_not_used(config, weakness, message):
    ensure_key()
    key = config / "snn-tune" / "resume.key"
    if weakness == "key-readable":
        key.chmod(0o644)
    elif weakness == "folder-writable":
        key.parent.chmod(0o777)
    elif weakness == "key-a-link":
        key.rename(config / "elsewhere")
        key.symlink_to(config / "elsewhere")
    else:
        key.write_text("abcd\n")
    with pytest.raises(UntrustedPickle, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_key()


def test_without_a_key_no_pickle_checks(config, tune):
    (tune / "tuner.pkl").write_bytes(pickle.dumps(None))
    with pytest.raises(UntrustedPickle, match=r"there is no resume key \(.*resume\.key\): this user's searches"):
        digests.verify_experiment(tune.parent)


def test_what_counts_as_a_pickle(tune):
    assert is_pickled(tune / "tuner.pkl") and is_pickled(tune / "trial_1" / "params.pkl")
    assert is_pickled(tune / "experiment_state-2026.json") and is_pickled(tune / "search_gen_state-2026.json")
    assert not is_pickled(tune / "trial_1" / "result.json") and not is_pickled(tune / "trial_1" / "checkpoint.pt")
    assert not is_pickled(tune / "tuner.pkl.hmac") and not is_pickled(tune / ".tuner.pkl.1a2b.tmp")


def test_the_file_system_signs_each_pickle_and_reads_only_bytes_that_check(config, tune):
    ensure_key()
    fs = signed_filesystem()
    write(fs, tune / "tuner.pkl", pickle.dumps({"state": 1}))
    (tune / "trial_1").mkdir()
    write(fs, tune / "trial_1" / "progress.csv", b"epoch\n1\n")
    assert sorted(os.listdir(tune)) == ["trial_1", "tuner.pkl", "tuner.pkl.hmac"]
    assert os.listdir(tune / "trial_1") == ["progress.csv"]  # not a pickle: written as it is, no digest
    assert pickle.loads(read(fs, tune / "tuner.pkl")) == {"state": 1}
    digests.verify_experiment(tune.parent)

    (tune / "tuner.pkl").write_bytes(pickle.dumps({"state": "changed"}))
    with pytest.raises(UntrustedPickle, match=r"tuner\.pkl does not match its digest of your resume key"):
        read(fs, tune / "tuner.pkl")
    with pytest.raises(UntrustedPickle, match=r"tuner\.pkl does not match its digest"):
        digests.verify_experiment(tune.parent)
    (tune / "tuner.pkl.hmac").unlink()
    with pytest.raises(UntrustedPickle, match=r"tuner\.pkl has no digest of your resume key"):
        read(fs, tune / "tuner.pkl")


def test_ray_tunes_copy_into_the_folder_is_signed(config, tune, tmp_path):
    """What Ray's sync does: pyarrow.fs.copy_files from its staging folder into the experiment folder."""
    ensure_key()
    staging = tmp_path / "staging"
    (staging / "trial_1").mkdir(parents=True)
    (staging / "experiment_state-x.json").write_text('{"trials": []}')
    (staging / "searcher-state-x.pkl").write_bytes(pickle.dumps([1, 2]))
    (staging / "trial_1" / "params.pkl").write_bytes(pickle.dumps({"lr": 0.1}))
    (staging / "trial_1" / "result.json").write_text("{}")
    pyarrow.fs.copy_files(str(staging), str(tune), destination_filesystem=signed_filesystem())
    assert sorted(p.name for p in tune.rglob("*.hmac")) == [
        "experiment_state-x.json.hmac",
        "params.pkl.hmac",
        "searcher-state-x.pkl.hmac",
    ]
    digests.verify_experiment(tune.parent)
    copied = tmp_path / "back"
    pyarrow.fs.copy_files(str(tune), str(copied), source_filesystem=signed_filesystem())  # Ray's restore
    assert pickle.loads((copied / "searcher-state-x.pkl").read_bytes()) == [1, 2]


def test_a_kill_between_the_digest_and_the_rename_leaves_a_pair_that_checks(config, tune, monkeypatch):
    """The .hmac is written first and accepts both contents; the content is renamed into place after it."""
    key = ensure_key()
    fs = signed_filesystem()
    write(fs, tune / "tuner.pkl", b"old")
    real_replace = os.replace

    def killed_before_the_content(src, dst):
        if not str(dst).endswith(".hmac"):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_the_content)
    with pytest.raises(KeyboardInterrupt):
        write(fs, tune / "tuner.pkl", b"new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (tune / "tuner.pkl").read_bytes() == b"old"
    accepted = json.loads((tune / "tuner.pkl.hmac").read_text())["hmac-sha256"]
    assert accepted == [digests.digest_of(b"new", key), digests.digest_of(b"old", key)]
    digests.verify_experiment(tune.parent)  # the old content still checks
    write(fs, tune / "tuner.pkl", b"newer")
    assert json.loads((tune / "tuner.pkl.hmac").read_text())["hmac-sha256"] == [
        digests.digest_of(b"newer", key),
        digests.digest_of(b"old", key),
    ]  # never more than two


def test_the_file_system_sent_to_rays_workers_carries_no_key(config):
    key = ensure_key()
    fs = signed_filesystem()
    write(fs, Path(config) / "x.pkl", b"data")  # the key is loaded and cached
    sent = pickle.dumps(fs)
    assert key not in sent and key.hex().encode() not in sent
    assert pickle.loads(sent).equals(fs)


def test_a_search_without_a_key_writes_and_reads_plainly_and_is_not_resumable(config, tune):
    """The search warned that it has no key: it still runs (its own files, as Ray wrote them)."""
    fs = signed_filesystem()
    write(fs, tune / "tuner.pkl", pickle.dumps("state"))
    assert os.listdir(tune) == ["tuner.pkl"] and pickle.loads(read(fs, tune / "tuner.pkl")) == "state"
    with pytest.raises(UntrustedPickle, match="there is no resume key"):
        digests.verify_experiment(tune.parent)
    ensure_key()  # made later, by another search: the folder still holds no digest of it
    with pytest.raises(UntrustedPickle, match=r"tuner\.pkl has no digest of your resume key"):
        digests.verify_experiment(tune.parent)
