"""Before ``--resume`` unpickles anything: the experiment folder must be writable by you alone.

A resume loads Ray Tune's ``tune/tuner.pkl``, the searcher's state and the experiment state
(JSON that carries cloudpickled objects) from the experiment folder, and unpickling runs
whatever code the file names. So ``--resume`` goes on only when nobody but you (and root)
can have put a file there:

* the experiment folder and everything in it are owned by you, and none of it is writable by
  others, nor by a group other than your own private group (the group named after you that
  nobody else can be in: no other listed member, and no other user whose primary group it is;
  a umask of 002 gives every file group-write);
* nothing in it carries an extended POSIX ACL (an entry for a named user or group, in the
  access ACL or a folder's default ACL): with one, the group bits show the ACL's mask, so
  ``setfacl -m u:OTHER:rw`` would look like group-write by your private group;
* nothing in it is a symbolic link (a link could point at a file someone else controls), but
  for the Optuna journal's lock, a link that Optuna makes and never reads through (a killed
  search leaves it behind);
* every folder above it is owned by you or root and is not writable by others (nor by a group
  but your own, nor by a named user or group of its ACL) unless it has the sticky bit (as /tmp
  has), so nobody can swap the experiment folder for another.

Anything else is refused with one line naming the path and the rule. The check cannot tell a
folder you copied from someone else (the copy is yours): ``digests.py`` can, by the digests of
the pickles.

``private_ray_temp`` keeps what Ray writes on its way to and from the experiment folder out of
others' reach as well (see there).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import struct
import sys
import tempfile
from pathlib import Path

from .. import experiment as files

JOURNAL_LOCK = f"{files.STUDY}.lock"  # optuna.storages.journal.JournalFileSymlinkLock's lock: a symbolic link
ACCESS_ACL, DEFAULT_ACL = "system.posix_acl_access", "system.posix_acl_default"
# Linux's xattr form of a POSIX ACL (include/uapi/linux/posix_acl_xattr.h): a 4-byte version, then
# 8-byte entries (tag, permissions, id), little-endian. The tags of named users and groups, and the mask:
ACL_USER, ACL_GROUP, ACL_MASK = 0x02, 0x08, 0x10
ACL_WRITE = 0x02


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
            _refuse(
                folder, f"(above the experiment) is writable by the group {_group(info.st_gid)} and has no sticky bit"
            )
        writers = [who for who, perms in _named_entries(folder, ACCESS_ACL) if perms & ACL_WRITE]
        if writers and not sticky:
            _refuse(folder, f"(above the experiment) is writable by {writers[0]} through its ACL and has no sticky bit")
    _check_entry(experiment, uid, private_gid)
    for root, folders, names in os.walk(experiment, onerror=_unreadable):
        for name in folders + names:
            _check_entry(Path(root, name), uid, private_gid)


def private_ray_temp() -> Path:
    """A folder only the user can enter, for a local search's Ray (RAY_TMPDIR): TMP/snn-tune-ray-<uid>, 0700.

    Ray makes its temporary folders writable by everyone, on purpose (/tmp/ray and each session's
    folder are 0777, without the sticky bit, so that users can share them). Ray Tune keeps its
    copy of the experiment's state there (the session's ``artifacts/``): the state is written
    there, then copied into the experiment folder (where the search signs it), and on --resume
    copied back and unpickled from there. Anyone could swap that folder for one of their own.
    Inside a folder that only the user can enter, Ray's 0777 folders are out of everyone else's
    reach. Raises UntrustedExperiment when the folder exists and is not the user's private one.
    """
    base = Path("/tmp") if sys.platform == "darwin" else Path(tempfile.gettempdir())  # Ray's own choice of base
    folder = base / f"snn-tune-ray-{os.geteuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        what = (
            "is not a folder"
            if not stat.S_ISDIR(info.st_mode)
            else f"belongs to {_user(info.st_uid)}"
            if info.st_uid != os.geteuid()
            else f"is mode {stat.S_IMODE(info.st_mode):04o}, not 0700"
        )
        raise UntrustedExperiment(
            f"{folder}, the folder for your searches' Ray, {what}: others could change what "
            f"Ray keeps there; remove it, or set RAY_TMPDIR to a folder only you can enter"
        )
    return folder


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
    for acl in (ACCESS_ACL, DEFAULT_ACL) if stat.S_ISDIR(info.st_mode) else (ACCESS_ACL,):
        named = _named_entries(path, acl)
        if named:
            kind = "an ACL" if acl == ACCESS_ACL else "a default ACL (inherited by what is made in it)"
            _refuse(path, f"has {kind} with an entry for {named[0][0]}; setfacl -b removes it")
    if info.st_mode & stat.S_IWGRP and info.st_gid != private_gid:
        _refuse(path, f"is writable by the group {_group(info.st_gid)}")


def _unreadable(error: OSError) -> None:
    _refuse(Path(error.filename), f"cannot be read ({error.strerror})")


def _refuse(path: Path, rule: str) -> None:
    raise UntrustedExperiment(
        f"--resume refused: {path} {rule}; resuming unpickles the experiment's files, "
        f"so they must be writable by you alone (see docs/security.md)"
    )


def _named_entries(path: Path, acl: str) -> list[tuple[str, int]]:
    """The named users and groups of ``path``'s ACL ``acl``, with their effective permissions (mask applied).

    A file without an extended ACL has none (Linux stores no xattr for an ACL that the mode bits
    say whole); nor has a file system without ACLs.
    """
    try:
        raw = os.getxattr(path, acl, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        _refuse(path, f"has an ACL that cannot be read ({e.strerror})")
    if len(raw) < 4 or (len(raw) - 4) % 8:
        _refuse(path, f"has an ACL of {len(raw)} bytes, not in Linux's format")
    entries = [struct.unpack_from("<HHI", raw, offset) for offset in range(4, len(raw), 8)]
    mask = next((perms for tag, perms, _ in entries if tag == ACL_MASK), 0o7)
    return [
        (_user(who) if tag == ACL_USER else f"the group {_group(who)}", perms & mask)
        for tag, perms, who in entries
        if tag in (ACL_USER, ACL_GROUP)
    ]


def _private_group(uid: int) -> int | None:
    """The user's own group, if the system gives each user one: named after the user, and nobody else
    can be in it (no other listed member, no other user whose primary group it is)."""
    try:
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(user.pw_gid)
    except KeyError:
        return None
    others_in_it = [u.pw_name for u in pwd.getpwall() if u.pw_gid == group.gr_gid and u.pw_uid != uid]
    alone = set(group.gr_mem) <= {user.pw_name} and not others_in_it
    return group.gr_gid if group.gr_name == user.pw_name and alone else None


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
