"""Every pickle a search leaves carries a keyed digest, and --resume unpickles only pickles whose digest holds.

Ray Tune keeps its state in pickles: ``tune/tuner.pkl``, ``tune/experiment_state-*.json`` (JSON
holding cloudpickled objects), ``tune/search_gen_state-*.json``, ``tune/searcher-state-*.pkl``
and each trial's ``params.pkl`` (and ``error.pkl``), and ``Tuner.restore`` unpickles them,
which runs whatever code they name. The permission checks of ``trust.py`` tell who could have
written the files; they cannot tell a folder copied from someone else (the copy is yours). So
the search signs what it writes, with a key nobody else has:

* the key: 32 random bytes in ``$XDG_CONFIG_HOME/snn-tune/resume.key`` (else
  ``~/.config/snn-tune/resume.key``), made by the first search, mode 0600 in a 0700 folder,
  used only while it is the user's own and private;
* the digest: HMAC-SHA256 of the file's bytes, in ``<file>.hmac`` beside it;
* where: Ray writes and reads its experiment folder only through the file system it is given
  (``RunConfig(storage_filesystem=...)``, ``Tuner.restore(storage_filesystem=...)``), the door
  that cloud storage uses. The search gives it ``signed_filesystem()``, the local file system
  with two differences for pickles (PICKLED): a pickle is written under a temporary name,
  its digest computed over the very bytes written, then renamed into place (the ``.hmac`` is
  written first and accepts the old and the new content, so a kill at any moment leaves a pair
  that matches); and a pickle is read whole, checked, and only the checked bytes are handed on.

``verify_experiment`` checks every pickle of a folder before ``--resume`` starts Ray Tune, so a
folder that fails is one line, and nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs

from .. import experiment as files

KEY_FILE = "resume.key"
DIGEST_SUFFIX = ".hmac"
_DOMAIN = b"snn-tune resume v1\n"  # what the key signs is a pickle of a search, nothing else
_ALGORITHM = "hmac-sha256"


class UntrustedPickle(ValueError):
    """A pickle of an experiment folder without a digest of this user's key, or whose digest does not hold."""


def is_pickled(path: str | Path) -> bool:
    """Whether Ray Tune keeps pickled objects in ``path``: any ``.pkl``, and the JSON state files of tune/."""
    path = Path(path)
    return path.suffix == ".pkl" or (path.suffix == ".json" and path.parent.name == files.TUNE)


# --- the key ------------------------------------------------------------------------------------


def key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "snn-tune" / KEY_FILE


def load_key() -> bytes:
    """The user's key; UntrustedPickle when there is none, or when another user could have read or set it."""
    path = key_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise UntrustedPickle(f"there is no resume key ({path}): this user's searches signed nothing") from None
    except OSError as e:
        raise UntrustedPickle(f"the resume key {path} cannot be read ({e.strerror})") from None
    try:
        _check_private(path.parent, os.stat(path.parent, follow_symlinks=False), folder=True)
        _check_private(path, os.fstat(fd), folder=False)
        text = os.read(fd, 1024).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise UntrustedPickle(f"the resume key {path} is not 32 bytes in hexadecimal")
    return key


def ensure_key() -> bytes:
    """The user's key, made first if there is none (private from its first byte: written, then linked in)."""
    path = key_path()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.parent / f".{KEY_FILE}.{secrets.token_hex(6)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # fails if another search made one meanwhile: that one is used
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return load_key()


def _check_private(path: Path, info: os.stat_result, folder: bool) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise UntrustedPickle(f"the resume key's folder {path} is a symbolic link")
    if info.st_uid != os.geteuid():
        raise UntrustedPickle(
            f"the resume key {'folder ' if folder else ''}{path} belongs to user id {info.st_uid}, not to you"
        )
    if info.st_mode & (0o022 if folder else 0o077):
        raise UntrustedPickle(
            f"the resume key {'folder ' if folder else ''}{path} is mode "
            f"{stat.S_IMODE(info.st_mode):04o}: others could read or replace it "
            f"(chmod {'700' if folder else '600'} it)"
        )


# --- digests ------------------------------------------------------------------------------------


def _new_digest(key: bytes) -> hmac.HMAC:
    digest = hmac.new(key, digestmod=hashlib.sha256)
    digest.update(_DOMAIN)
    return digest


def digest_of(data: bytes, key: bytes) -> str:
    digest = _new_digest(key)
    digest.update(data)
    return digest.hexdigest()


def _digest_file(path: str) -> str:
    return path + DIGEST_SUFFIX


def _accepted(path: str) -> list[str]:
    """The digests ``path``'s .hmac accepts (none when it is missing or not of this layout)."""
    try:
        with open(_digest_file(path), "rb") as f:
            saved = json.loads(f.read(64 * 1024))
    except (OSError, ValueError):
        return []
    values = saved.get(_ALGORITHM) if isinstance(saved, dict) else None
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def checked_bytes(path: str, key: bytes) -> bytes:
    """The whole of ``path`` once its digest holds; UntrustedPickle otherwise."""
    with open(path, "rb") as f:
        data = f.read()
    if not any(hmac.compare_digest(digest_of(data, key), accepted) for accepted in _accepted(path)):
        why = "has no digest" if not os.path.exists(_digest_file(path)) else "does not match its digest"
        raise UntrustedPickle(
            f"{path} {why} of your resume key: it was not written by a search of yours, or was changed since"
        )
    return data


def _write_digests(path: str, digests: list[str]) -> None:
    target = _digest_file(path)
    temporary = f"{os.path.dirname(target)}/.{os.path.basename(target)}.{secrets.token_hex(6)}.tmp"
    with open(temporary, "w") as f:
        json.dump({_ALGORITHM: digests}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, target)


def verify_experiment(experiment: Path) -> None:
    """UntrustedPickle unless every pickle in ``experiment`` holds a digest of this user's key."""
    tune = experiment / files.TUNE
    if not tune.is_dir():
        return
    key = load_key()
    for root, _, names in os.walk(tune):
        for name in sorted(names):
            if is_pickled(Path(root, name)):
                checked_bytes(os.path.join(root, name), key)


# --- the file system Ray Tune is given ----------------------------------------------------------


class _SigningWriter:
    """A file-like sink for one pickle: a temporary file, the digest of what is written, renamed on close."""

    def __init__(self, path: str, key: bytes | None) -> None:
        self.path, self.key = path, key
        self.temporary = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{secrets.token_hex(6)}.tmp"
        self.file = open(self.temporary, "xb")
        self.digest = _new_digest(key) if key is not None else None
        self.closed = False

    def write(self, data: Any) -> int:
        data = bytes(data)
        if self.digest is not None:
            self.digest.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def tell(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.key is not None:
            # the .hmac first, still accepting the content in place if it accepted it, so that a kill
            # before the rename leaves the old pair whole; then the content
            kept = []
            if os.path.exists(self.path):
                with open(self.path, "rb") as f:
                    current = digest_of(f.read(), self.key)
                kept = [current] if current in _accepted(self.path) else []
            _write_digests(self.path, [self.digest.hexdigest(), *kept])
        os.replace(self.temporary, self.path)


class SigningHandler(pyarrow.fs.FileSystemHandler):
    """The local file system, but pickles (``is_pickled``) are signed when written and checked when read.

    The key is read from the user's key file when first needed (it is never pickled: Ray sends
    this handler to its workers, which write only checkpoints, no pickles). Without a usable key
    (the search warned that it could not make one) pickles are written and read as they are:
    that search's own files; ``verify_experiment`` refuses to resume its folder.
    """

    def __init__(self) -> None:
        self._local = pyarrow.fs.LocalFileSystem()
        self._key: bytes | None = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SigningHandler)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def _signing_key(self) -> bytes | None:
        if self._key is None:
            try:
                self._key = load_key()
            except UntrustedPickle:
                return None  # unsigned: --resume will refuse what this wrote, with the reason
        return self._key

    def get_type_name(self) -> str:
        return "snn-tune-signed-local"

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list:
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector) -> list:
        return self._local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise PermissionError("snn-tune never empties a file system's root")

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)
        if is_pickled(path) and os.path.exists(_digest_file(path)):
            os.unlink(_digest_file(path))

    def move(self, src: str, dest: str) -> None:  # a digest is of the content alone: it moves with it
        self._local.move(src, dest)
        if os.path.exists(_digest_file(src)):
            os.replace(_digest_file(src), _digest_file(dest))

    def copy_file(self, src: str, dest: str) -> None:
        self._local.copy_file(src, dest)
        if os.path.exists(_digest_file(src)):
            self._local.copy_file(_digest_file(src), _digest_file(dest))

    def open_input_stream(self, path: str):
        key = self._signing_key()
        if key is not None and is_pickled(path):
            return pa.BufferReader(checked_bytes(path, key))
        return self._local.open_input_stream(path)

    def open_input_file(self, path: str):
        key = self._signing_key()
        if key is not None and is_pickled(path):
            return pa.BufferReader(checked_bytes(path, key))
        return self._local.open_input_file(path)

    def open_output_stream(self, path: str, metadata: dict | None = None):
        if is_pickled(path):
            return pa.PythonFile(_SigningWriter(path, self._signing_key()), mode="w")
        return self._local.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path: str, metadata: dict | None = None):
        if is_pickled(path):
            raise PermissionError(f"{path}: a signed pickle is written whole, never appended to")
        return self._local.open_append_stream(path, metadata=metadata)


def signed_filesystem() -> pyarrow.fs.PyFileSystem:
    """The file system a search hands Ray Tune for its experiment folder (see the module's docstring)."""
    return pyarrow.fs.PyFileSystem(SigningHandler())
