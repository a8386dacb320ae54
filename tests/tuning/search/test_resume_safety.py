"""--resume works on the experiment folder alone, and never unpickles what someone else could have written.

* A copy of an interrupted experiment resumes into itself: the original's files stay byte for byte
  as they were (Ray's OptunaSearch used to pickle the journal's absolute path).
* A tune/tuner.pkl that would run code when unpickled is refused, before anything is unpickled,
  when the folder or the file could have been written by anyone but the user (its bits, its
  owner, an ACL entry, a group someone else can be in), or when a pickle does not carry a digest
  of the user's resume key (a folder crafted by another account and copied, a pickle changed).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.bad_input import Case, RunsCodeWhenUnpickled, assert_refused, run_cases
from tests.tuning.helpers import FAULTY_SEARCH, search_command, start_search
from tests.tuning.search.faulty_search import SLOW_ENV
from tests.tuning.search.kill import kill_search
from tests.tuning.search.test_resume_and_failures import QUICK, finished_in_study
from tuning import experiment as files


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_copied_experiment_resumes_into_the_copy_and_leaves_the_original_as_it_was(tmp_path, data_root):
    trials = 4
    # the trial function of faulty_search (Ray resumes only with the same one), its first trials at least
    # 3 s long (1 s more an epoch), so the kill lands before the search can finish
    process = start_search(
        search_command("fc", tmp_path, "orig", *QUICK, "--trials", str(trials), module=FAULTY_SEARCH),
        data_root,
        tmp_path / "first.log",
        **{SLOW_ENV: "1"},
    )
    deadline = time.time() + 300
    while len(finished_in_study(tmp_path / "orig", "orig")) < 2 and time.time() < deadline:
        assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.5)
    kill_search(process)  # the command, its Ray and the trial workers (in groups of their own)
    before = {t.number: t for t in finished_in_study(tmp_path / "orig", "orig")}
    assert 2 <= len(before) < trials
    shutil.copytree(tmp_path / "orig", tmp_path / "copy", symlinks=True)
    original = digests(tmp_path / "orig")

    resumed = start_search(
        search_command("fc", tmp_path, "copy", *QUICK, "--trials", str(trials), "--resume", module=FAULTY_SEARCH),
        data_root,
        tmp_path / "second.log",
    )
    assert resumed.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]

    assert digests(tmp_path / "orig") == original  # not a byte written to the original
    after = {t.number: t for t in finished_in_study(tmp_path / "copy", "orig")}  # the study keeps its first name
    assert len(after) == trials  # every trial is in the copy's own journal
    for number, trial in before.items():
        assert after[number].state == trial.state and after[number].value == trial.value
        assert after[number].intermediate_values == trial.intermediate_values
    table = pd.read_csv(tmp_path / "copy" / "trials.csv")
    assert len(table) == trials and set(table["status"]) == {"TERMINATED"}


def test_the_searchers_pickles_hold_no_journal_path_and_reopen_the_resumed_experiments_journal(tmp_path):
    """No Ray cluster: the searcher's state is saved in one folder and restored into a copy."""
    import optuna

    from tests.tuning.search.test_searcher import new_searcher, run_trial
    from tuning.search.searcher import resuming_into

    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    journal = optuna.storages.journal.JournalFileBackend(str(original / files.STUDY))
    searcher = new_searcher(storage=optuna.storages.JournalStorage(journal), study_name="original")
    run_trial(searcher, "a", epochs=4)
    searcher.suggest("b")  # a trial still running when the search stopped
    searcher.on_trial_result("b", {"epoch": 1, "training_iteration": 1, "test_acc": 0.5})
    searcher.save(str(original / "searcher-state.pkl"))
    state = (original / "searcher-state.pkl").read_bytes()
    assert str(original).encode() not in state and str(original).encode() not in pickle.dumps(searcher)
    shutil.copytree(original, copy)
    before = digests(original)

    restored = pickle.loads(pickle.dumps(searcher))  # as Tuner.restore reads tune/tuner.pkl, outside resuming_into
    assert restored.study is None  # the study stays closed rather than open the original's journal
    with resuming_into(copy):
        restored = pickle.loads(pickle.dumps(searcher))
        restored.restore(str(copy / "searcher-state.pkl"))
    restored.on_trial_result("b", {"epoch": 2, "training_iteration": 2, "test_acc": 0.6})
    restored.on_trial_complete("b", {"epoch": 2, "training_iteration": 2, "test_acc": 0.6})
    run_trial(restored, "c", epochs=4)

    assert digests(original) == before
    study = optuna.load_study(
        study_name="original",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(copy / files.STUDY))),
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert study.trials[1].intermediate_values == {1: 0.5, 2: 0.6}  # the running trial went on where it was


# --- a crafted tuner.pkl -------------------------------------------------------------------------


def crafted_experiment(folder: Path, marker: Path | None = None) -> Path:
    """results/exp: a valid search.json and a tune/tuner.pkl whose unpickling creates ``marker`` (folder/marker)."""
    from tuning.search.inputs import _settings_from_args, _space_from_args, build_parser
    from tuning.search.state import _save_state

    experiment = folder / "results" / "exp"
    (experiment / files.TUNE).mkdir(parents=True)
    args = build_parser().parse_args(["fc", "--preset", "smoke"])
    space = _space_from_args(args)
    _save_state(experiment, space, _settings_from_args(args, space))
    (experiment / files.TUNE / "tuner.pkl").write_bytes(
        pickle.dumps(RunsCodeWhenUnpickled(marker or folder / "marker"))
    )
    return experiment


def writable_by_others(folder: Path) -> None:
    crafted_experiment(folder).joinpath(files.TUNE, "tuner.pkl").chmod(0o666)


def folder_writable_by_others(folder: Path) -> None:
    crafted_experiment(folder).joinpath(files.TUNE).chmod(0o777)


def group_writable(folder: Path) -> None:
    import grp

    experiment = crafted_experiment(folder)
    os.chown(experiment / files.TUNE / "tuner.pkl", -1, grp.getgrnam("nogroup").gr_gid)
    (experiment / files.TUNE / "tuner.pkl").chmod(0o664)


def owned_by_someone_else(folder: Path) -> None:
    os.chown(crafted_experiment(folder) / files.TUNE / "tuner.pkl", 65534, -1)


def a_symbolic_link(folder: Path) -> None:
    experiment = crafted_experiment(folder)
    (experiment / files.TUNE / "tuner.pkl").rename(folder / "elsewhere.pkl")
    (experiment / files.TUNE / "tuner.pkl").symlink_to(folder / "elsewhere.pkl")


def parent_writable_by_others(folder: Path) -> None:
    crafted_experiment(folder)
    (folder / "results").chmod(0o777)  # without the sticky bit: anyone could swap exp for another folder


def parent_writable_by_a_group(folder: Path) -> None:
    import grp

    crafted_experiment(folder)
    os.chown(folder / "results", -1, grp.getgrnam("nogroup").gr_gid)
    (folder / "results").chmod(0o775)


NOBODY = 65534  # another user (Debian's nobody); an ACL may name any user id


def acl_xattr(path: Path, named_user: int, perms: int) -> bytes:
    """Linux's xattr form of an ACL: ``path``'s mode bits, plus a named user with ``perms`` and the mask."""
    mode = os.stat(path).st_mode
    entries = [
        (0x01, mode >> 6 & 7, 0xFFFFFFFF),
        (0x02, perms, named_user),
        (0x04, mode >> 3 & 7, 0xFFFFFFFF),
        (0x10, perms | mode >> 3 & 7, 0xFFFFFFFF),
        (0x20, mode & 7, 0xFFFFFFFF),
    ]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def give_acl(path: Path, *, default: bool = False, user: int = NOBODY, perms: str = "rw") -> None:
    """``setfacl -m u:USER:PERMS`` (``-d``: the folder's default ACL); its raw xattr where setfacl is missing."""
    if shutil.which("setfacl"):
        subprocess.run(["setfacl", *(["-d"] if default else []), "-m", f"u:{user}:{perms}", str(path)], check=True)
        return
    bits = sum(bit for letter, bit in (("r", 4), ("w", 2), ("x", 1)) if letter in perms)
    os.setxattr(path, "system.posix_acl_default" if default else "system.posix_acl_access", acl_xattr(path, user, bits))


def acls_supported(folder: Path) -> bool:
    probe = folder / "acl-probe"
    probe.touch()
    try:
        give_acl(probe)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    finally:
        probe.unlink()
    return True


def an_acl_for_another_user(folder: Path) -> None:
    """The issue's attack: the group bits then show the ACL's mask, which looks like private-group write."""
    give_acl(crafted_experiment(folder) / files.TUNE / "tuner.pkl")


def a_default_acl_on_the_folder(folder: Path) -> None:
    """A shared results folder's default ACL: everything the search writes in tune/ would inherit the entry."""
    give_acl(crafted_experiment(folder) / files.TUNE, default=True, perms="rwx")


def parent_writable_through_an_acl(folder: Path) -> None:
    crafted_experiment(folder)
    give_acl(folder / "results", perms="rwx")


def sign(path: Path, content: bytes | None = None, key: bytes | None = None) -> None:
    """``path``'s .hmac as a search of this user writes it, for ``content`` (default: the file's own bytes)."""
    from tuning.search.digests import digest_of, load_key

    digest = digest_of(path.read_bytes() if content is None else content, key or load_key())
    Path(f"{path}.hmac").write_text(json.dumps({"hmac-sha256": [digest]}))


def no_digest(folder: Path) -> None:
    """Every bit right (yours, private), as a folder you copied from someone else is: only the digest is missing."""
    crafted_experiment(folder)


def signed_with_another_key(folder: Path) -> None:
    sign(crafted_experiment(folder) / files.TUNE / "tuner.pkl", key=os.urandom(32))


def signed_then_changed(folder: Path) -> None:
    tuner = crafted_experiment(folder) / files.TUNE / "tuner.pkl"
    sign(tuner, content=pickle.dumps(None))  # what the search wrote; the payload replaced it since


def an_unsigned_pickle_in_a_trial(folder: Path) -> None:
    """tuner.pkl in order, a payload in a trial's params.pkl: every pickle is checked, not only the first read."""
    experiment = crafted_experiment(folder)
    (experiment / files.TUNE / "tuner.pkl").write_bytes(pickle.dumps(None))
    sign(experiment / files.TUNE / "tuner.pkl")
    trial = experiment / files.TUNE / "run_trial_00000_0"
    trial.mkdir()
    (trial / "params.pkl").write_bytes(pickle.dumps(RunsCodeWhenUnpickled(folder / "marker")))


def crafted_by_another_user_then_copied(folder: Path) -> None:
    """Another account writes the folder (unpacked by user nobody); the user copies it, and the copy is the
    user's own, with private bits: only the digest can tell."""
    staging, elsewhere = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    crafted_experiment(staging, marker=folder / "marker")  # the payload would run as the user who resumes
    archive = subprocess.run(
        ["tar", "-C", str(staging / "results"), "-c", "exp"], capture_output=True, check=True
    ).stdout
    elsewhere.chmod(0o777)
    subprocess.run(
        ["tar", "-x", "-C", str(elsewhere)],
        input=archive,
        check=True,
        preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)),
    )
    assert (elsewhere / "exp" / files.TUNE / "tuner.pkl").stat().st_uid == NOBODY
    (folder / "results").mkdir()
    shutil.copytree(elsewhere / "exp", folder / "results" / "exp")
    shutil.rmtree(staging)
    shutil.rmtree(elsewhere)


RESUME = ("fc", "--results-dir", "{case}/results", "--name", "exp", "--resume", "--no-dashboard")
CRAFTED = {
    "file-writable-by-others": Case("tuning.search", RESUME, "tuner.pkl is writable by others", writable_by_others),
    "folder-writable-by-others": Case("tuning.search", RESUME, "tune is writable by others", folder_writable_by_others),
    "a-symbolic-link": Case("tuning.search", RESUME, "tuner.pkl is a symbolic link", a_symbolic_link),
    "parent-writable-by-others": Case(
        "tuning.search", RESUME, "is writable by others and has no sticky bit", parent_writable_by_others
    ),
}
CRAFTED.update(
    {
        "no-digest": Case("tuning.search", RESUME, "tuner.pkl has no digest of your resume key", no_digest),
        "signed-with-another-key": Case(
            "tuning.search", RESUME, "tuner.pkl does not match its digest of your resume key", signed_with_another_key
        ),
        "signed-then-changed": Case(
            "tuning.search", RESUME, "tuner.pkl does not match its digest", signed_then_changed
        ),
        "an-unsigned-pickle-in-a-trial": Case(
            "tuning.search", RESUME, "params.pkl has no digest of your resume key", an_unsigned_pickle_in_a_trial
        ),
    }
)
if acls_supported(Path(tempfile.gettempdir())):
    CRAFTED["an-acl-for-another-user"] = Case(
        "tuning.search", RESUME, "tuner.pkl has an ACL with an entry for user", an_acl_for_another_user
    )
    CRAFTED["a-default-acl-on-the-folder"] = Case(
        "tuning.search", RESUME, "tune has a default ACL (inherited by what", a_default_acl_on_the_folder
    )
    CRAFTED["parent-writable-through-an-acl"] = Case(
        "tuning.search", RESUME, "(above the experiment) is writable by user", parent_writable_through_an_acl
    )
if os.geteuid() == 0:  # only root can give a file to another user or group
    CRAFTED["owned-by-someone-else"] = Case("tuning.search", RESUME, "tuner.pkl belongs to user", owned_by_someone_else)
    CRAFTED["group-writable"] = Case(
        "tuning.search", RESUME, "tuner.pkl is writable by the group nogroup", group_writable
    )
    CRAFTED["parent-writable-by-a-group"] = Case(
        "tuning.search", RESUME, "is writable by the group nogroup and", parent_writable_by_a_group
    )
    CRAFTED["crafted-by-another-user-then-copied"] = Case(
        "tuning.search", RESUME, "tuner.pkl has no digest of your resume key", crafted_by_another_user_then_copied
    )


@pytest.fixture(scope="module")
def crafted(tmp_path_factory, data_root):
    """Each case run by `--resume`, with a resume key of its own (the cases that sign files sign with it)."""
    from tuning.search.digests import ensure_key

    config = tmp_path_factory.mktemp("config")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(config))
        ensure_key()
        return run_cases(
            CRAFTED,
            tmp_path_factory.mktemp("crafted"),
            {"SNN_DATA_DIR": str(data_root), "XDG_CONFIG_HOME": str(config)},
        )


@pytest.mark.parametrize("cause", sorted(CRAFTED))
def test_a_crafted_tuner_pickle_is_refused_and_never_unpickled(crafted, cause):
    assert_refused(crafted[cause], CRAFTED[cause].fragment)
    assert "marker" not in crafted[cause].after  # the payload did not run


def test_the_crafted_pickle_does_run_code_when_unpickled(tmp_path):
    """The payload the refusals are tested with is live: plain unpickling runs it."""
    pickle.loads(pickle.dumps(RunsCodeWhenUnpickled(tmp_path / "marker")))
    assert (tmp_path / "marker").exists()


def test_the_acl_cases_run_where_the_file_system_has_acls(tmp_path):
    """Says so when the ACL cases above were left out, rather than passing without them."""
    if not acls_supported(tmp_path):
        pytest.skip(f"{tmp_path}'s file system has no POSIX ACLs: the ACL cases of CRAFTED did not run")
    assert {"an-acl-for-another-user", "a-default-acl-on-the-folder", "parent-writable-through-an-acl"} <= set(CRAFTED)


def test_a_minimal_acl_is_no_extended_entry(tmp_path):
    """An ACL of the mode bits alone (what some tools leave) names nobody: it is accepted."""
    from tuning.search.trust import ACCESS_ACL, _named_entries

    path = tmp_path / "f"
    path.touch()
    mode = os.stat(path).st_mode
    minimal = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, bits, 0xFFFFFFFF)
        for tag, bits in ((0x01, mode >> 6 & 7), (0x04, mode >> 3 & 7), (0x20, mode & 7))
    )
    try:
        os.setxattr(path, ACCESS_ACL, minimal)
    except OSError as e:
        pytest.skip(f"no POSIX ACLs on {tmp_path}'s file system ({e.strerror})")
    assert _named_entries(path, ACCESS_ACL) == []
    give_acl(path, perms="r")
    assert _named_entries(path, ACCESS_ACL) == [("user nobody", 4)]


def test_a_group_that_is_another_users_primary_group_is_not_private(tmp_path, monkeypatch):
    """The private-group rule asks who can be in the group: its listed members and whose primary group it is."""
    import grp
    import pwd

    from tuning.search import trust

    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(me.pw_gid)
    if group.gr_name != me.pw_name or set(group.gr_mem) - {me.pw_name}:
        pytest.skip(f"{me.pw_name}'s primary group {group.gr_name} is not a private one to begin with")
    experiment = tmp_path / "exp"
    experiment.mkdir(mode=0o700)
    (experiment / "tuner.pkl").touch(mode=0o660)
    os.chmod(experiment / "tuner.pkl", 0o660)
    trust.check_resumable(experiment.resolve())  # group-writable by the user's own group: accepted

    users = [*pwd.getpwall(), pwd.struct_passwd(("mallory", "x", 4242, me.pw_gid, "", "/nonexistent", "/bin/sh"))]
    monkeypatch.setattr(pwd, "getpwall", lambda: users)  # a second user whose primary group is the user's
    with pytest.raises(trust.UntrustedExperiment, match=rf"tuner\.pkl is writable by the group {group.gr_name}"):
        trust.check_resumable(experiment.resolve())


@pytest.mark.parametrize("prepared", ["mode-0777", "a-symbolic-link", "a-file", "another-users"])
def test_rays_folder_for_the_search_must_be_the_users_alone(tmp_path, monkeypatch, prepared):
    """Ray makes its folders 0777; the search's lie in TMP/snn-tune-ray-<uid>, which someone may have prepared."""
    from tuning.search import trust

    monkeypatch.setattr(trust.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = tmp_path / f"snn-tune-ray-{os.geteuid()}"
    assert trust.private_ray_temp() == folder and stat.S_IMODE(folder.stat().st_mode) == 0o700
    folder.rmdir()
    if prepared == "mode-0777":
        folder.mkdir()
        folder.chmod(0o777)
        expected = "is mode 0777, not 0700"
    elif prepared == "a-symbolic-link":
        (tmp_path / "theirs").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "theirs")
        expected = "is not a folder"
    elif prepared == "a-file":
        folder.write_text("")
        expected = "is not a folder"
    else:
        if os.geteuid() != 0:
            pytest.skip("only root can give a folder to another user")
        folder.mkdir(mode=0o700)
        os.chown(folder, NOBODY, -1)
        expected = "belongs to user nobody"
    with pytest.raises(
        trust.UntrustedExperiment, match=f"snn-tune-ray-{os.geteuid()}, the folder for your searches' Ray, {expected}"
    ):
        trust.private_ray_temp()
