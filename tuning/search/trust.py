"""Before ``--resume`` unpickles anything: the experiment folder must be writable by you alone.

A resume loads Ray Tune's ``tune/tuner.pkl``, the searcher's state and the experiment state
(JSON that carries cloudpickled objects) from the experiment folder, and unpickling runs
whatever code the file names. So ``--resume`` goes on only when nobody but you (and root)
can have put a file there:

* the experiment folder and everything in it are owned by you, and none of it is writable by
  others, nor by a group other than your own private group (the group named after you with no
  other members, which a umask of 002 gives every file);
* nothing in it is a symbolic link (a link could point at a file someone else controls), but
  for the Optuna journal's lock, a link that Optuna makes and never reads through (a killed
  search leaves it behind);
* every folder above it is owned by you or root and is not writable by others (nor by a group
  but your own) unless it has the sticky bit (as /tmp has), so nobody can swap the experiment
  folder for another.

Anything else is refused with one line naming the path and the rule. The check cannot tell a
folder you copied from someone else (the copy is yours): resume only experiments you ran.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from .. import experiment as files

JOURNAL_LOCK = f"{files.STUDY}.lock"  # optuna.storages.journal.JournalFileSymlinkLock's lock: a symbolic link


class UntrustedExperiment(ValueError):
    """An experiment folder that someone other than the user could have written to."""


def check_resumable(experiment: Path) -> None:
    """Raise UntrustedExperiment unless ``experiment`` (an absolute, resolved path) is the user's alone."""
    uid = os.geteuid()
    private_gid = _private_group(uid)
    for folder in reversed(experiment.parents):
        info = os.stat(folder)
        if info.st_uid not in (uid, 0):
            _refuse(folder, f"(above the experiment) belongs to {_user(info.st_uid)}")
        sticky = info.st_mode & stat.S_ISVTX
        if info.st_mode & stat.S_IWOTH and not sticky:
            _refuse(folder, "(above the experiment) is writable by others and has no sticky bit")
        if info.st_mode & stat.S_IWGRP and info.st_gid != private_gid and not sticky:
            _refuse(folder, f"(above the experiment) is writable by the group {_group(info.st_gid)} and has no "
                            f"sticky bit")
    _check_entry(experiment, uid, private_gid)
    for root, folders, names in os.walk(experiment, onerror=_unreadable):
        for name in folders + names:
            _check_entry(Path(root, name), uid, private_gid)


def _check_entry(path: Path, uid: int, private_gid: int | None) -> None:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        if path.name == JOURNAL_LOCK and path.parent.joinpath(files.STUDY).exists():
            return
        _refuse(path, "is a symbolic link")
    if info.st_uid != uid:
        _refuse(path, f"belongs to {_user(info.st_uid)}, not to you")
    if info.st_mode & stat.S_IWOTH:
        _refuse(path, "is writable by others")
    if info.st_mode & stat.S_IWGRP and info.st_gid != private_gid:
        _refuse(path, f"is writable by the group {_group(info.st_gid)}")


def _unreadable(error: OSError) -> None:
    _refuse(Path(error.filename), f"cannot be read ({error.strerror})")


def _refuse(path: Path, rule: str) -> None:
    raise UntrustedExperiment(f"--resume refused: {path} {rule}; resuming unpickles the experiment's files, "
                              f"so they must be writable by you alone (see README, Resume)")


def _private_group(uid: int) -> int | None:
    """The user's own group (named after the user, no other members), if the system gives each user one."""
    try:
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(user.pw_gid)
    except KeyError:
        return None
    return group.gr_gid if group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name} else None


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"user id {uid}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
