"""The fast paths' C kernels: built with the machine's C compiler on first use, checked, cached, loaded by ctypes.

A kernel is one C file next to this module (with the headers beside it), built in about half a second
with portable flags: no ``-march=native``, so a library runs on any CPU of the compiler's target; on x86-64
its loops are compiled twice, for SSE2 and AVX2, and the loader runs the copy the CPU has (``kernel.h``).
Float rounding stays IEEE's: ``-ffp-contract=off`` keeps each multiply and add apart, as torch's kernels
compute them, and nothing like ``-ffast-math`` is used. The kernels parallelise with OpenMP and share
torch's own runtime; a compiler without OpenMP builds them single-threaded (one warning).
``SNN_KERNEL_CFLAGS`` adds flags (e.g. ``-march=native``): the cache key holds what the compiler
predefines under the flags (``__AVX512F__``, ``__ARM_FEATURE_SVE``, ...), so a library built for one
CPU's features is never loaded on a CPU the compiler would target differently.

Before a library's first kernel runs, in every process: each struct's size and fields' offsets as the
compiled library reports them (``snn_layout``) must equal the ctypes declarations; then a known-answer
check runs the kernel against its reference path (spikingjelly's neurons, aten's max-pool, the dense
Poisson current) on small inputs with the cases the tests know, forward and backward, to the tests'
tolerance. Its verdict is stored beside the library (with the library's SHA-256), so the check runs
once per build. A library that fails either is refused with one warning naming it and the error found,
and the caller's reference path runs; so it does without a compiler (one warning), where compiling
fails, and with ``SNN_C_KERNELS=0`` (no warning).

The cache is ``$SNN_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/snn-tune``, else ``~/.cache/snn-tune``, the
library named by a hash of the sources, the flags and the compiler. It is used only where nobody but
this user can swap what is loaded: the folder and every folder above it belong to the user or root and
are writable by nobody else (a group of the user's alone, or the sticky bit as /tmp has, excepted); the
library is opened without following links, checked on the open descriptor (a regular file of this
user's that only the user can write) and loaded through that descriptor (``/proc/self/fd/N``). Where any
of that cannot hold (no ``/proc``, no user ids), the kernel is built afresh in a private temporary
folder, loaded, and the folder removed.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from . import internals

try:
    import grp
    import pwd
except ImportError:  # no user database (Windows): no cache is trusted there
    grp = pwd = None

FLAGS = ("-O3", "-ffp-contract=off", "-fno-trapping-math", "-shared", "-fPIC")
OPENMP = "-fopenmp"
EXTRA_FLAGS = "SNN_KERNEL_CFLAGS"  # environment: flags added after FLAGS, as a shell would split them
# the tolerance the tests hold the kernels to: spikes and voltages exact, gradients to float rounding
RTOL, ATOL = 1e-5, 1e-6

_loaded: dict[str, ctypes.CDLL | None] = {}  # source name -> the checked library, or None: the reference path
_told: set[str] = set()  # what has been warned about, once per process
# Descriptors of the libraries loaded through /proc/self/fd/N, kept open: dlopen takes a path it has loaded
# before for the same library, so a number reused for another library would load the first one again.
_held: list[int] = []
_TEMPORARY = "snn-kernels-"  # the prefix of a build folder used once, where no private cache is
SOURCES = Path(__file__).parent  # the C files and their headers


class OutOfMemory(RuntimeError):
    """A kernel could not allocate its scratch memory; the caller runs its reference path."""


class Kernels:
    """The functions of one C file, built, checked and loaded on first ``get()``; None where they cannot be trusted.

    signatures: {function name: (restype, [argtypes])}, as ctypes declares them; structs: {C name: the
    ctypes Structure declaring it}, whose fields must carry the C field names; check: the known-answer check,
    ``check(lib) -> None`` or the error found, run before the library is first used.
    """

    def __init__(
        self,
        source_name: str,
        signatures: dict,
        structs: dict[str, type[ctypes.Structure]],
        check: Callable[[ctypes.CDLL], str | None],
    ):
        self.source_name, self.signatures, self.structs, self.check = source_name, signatures, structs, check

    def get(self) -> ctypes.CDLL | None:
        if not enabled():
            return None
        if self.source_name not in _loaded:
            if internals.global_module_hooks():
                # the known-answer check runs reference modules, which a global hook (a module tracker, an op
                # counter) would see and could break: not now; this call runs the reference path
                return None
            _loaded[self.source_name] = self._load()
        return _loaded[self.source_name]

    def refuse(self, why: str) -> None:
        """Stop using this kernel in this process (one warning): its caller's reference path runs from now on."""
        if _loaded.get(self.source_name) is not None:
            _warn_once(f"the C kernel {self.source_name} {why}; running the reference path instead")
        _loaded[self.source_name] = None

    def _load(self) -> ctypes.CDLL | None:
        cc = compiler()
        if cc is None:
            _warn_once(
                "no C compiler (cc, gcc or clang) on the PATH: the C kernels are not built and the fast "
                "paths run their reference paths (spikingjelly's neurons, the dense Poisson encoder), more "
                "slowly; install gcc or clang to build them"
            )
            return None
        try:
            lib, verdict = _built_library(SOURCES / self.source_name, cc, self)
        except (OSError, subprocess.SubprocessError, BuildError) as error:
            _warn_once(f"could not build the C kernel {self.source_name} ({error}); running the reference path instead")
            return None
        if verdict:
            _warn_once(f"the C kernel {self.source_name} is refused: {verdict}; running the reference path instead")
            return None
        return lib

    def declare(self, lib: ctypes.CDLL) -> None:
        for name, (restype, argtypes) in self.signatures.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
        lib.snn_layout.restype = ctypes.c_int
        lib.snn_layout.argtypes = [
            ctypes.c_int64,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.POINTER(ctypes.c_int64),
            ctypes.POINTER(ctypes.c_int64),
        ]
        lib.snn_openmp.restype, lib.snn_openmp.argtypes = ctypes.c_int, []

    def layout_error(self, lib: ctypes.CDLL) -> str | None:
        """None when every struct's size and every field's offset and size agree in C and ctypes, else the first that differs."""
        compiled, i = {}, 0
        name, offset, size = ctypes.c_char_p(), ctypes.c_int64(), ctypes.c_int64()
        while lib.snn_layout(i, ctypes.byref(name), ctypes.byref(offset), ctypes.byref(size)):
            compiled[name.value.decode()] = (offset.value, size.value)
            i += 1
        declared = {}
        for struct, cls in self.structs.items():
            declared[struct] = (0, ctypes.sizeof(cls))
            for field, *_ in cls._fields_:
                descriptor = getattr(cls, field)
                declared[f"{struct}.{field}"] = (descriptor.offset, descriptor.size)
        for entry in sorted(compiled.keys() | declared.keys()):
            c, py = compiled.get(entry), declared.get(entry)
            if c != py:

                def say(x):
                    return (
                        "absent"
                        if x is None
                        else (f"{x[1]} bytes" if "." not in entry else f"offset {x[0]}, {x[1]} bytes")
                    )

                return f"struct layout {entry}: {say(c)} in C, {say(py)} in ctypes"
        return None


class BuildError(RuntimeError):
    """The compiler failed (its last line of output is the message)."""


def enabled() -> bool:
    """False when ``SNN_C_KERNELS=0`` turns the C kernels off (the reference paths then run)."""
    return os.environ.get("SNN_C_KERNELS", "1") != "0"


def compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the PATH; None when there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def load(source_name: str) -> ctypes.CDLL | None:
    """The checked library of the C file ``source_name`` next to this module; None where it cannot be trusted."""
    from . import fire_pool, neurons, poisson  # each declares its Kernels, with its check

    kernels = {k.source_name: k for k in (neurons._KERNELS, fire_pool._KERNELS, poisson._KERNELS)}
    return kernels[source_name].get()


# ----------------------------------------------------------------------------- checking a library


def mismatch(
    what: str, got: torch.Tensor, expected: torch.Tensor, exact: bool = False, rtol: float = RTOL, atol: float = ATOL
) -> str | None:
    """None when ``got`` equals ``expected`` (bit for bit if ``exact``, else within atol + rtol x |expected|),
    else what differs: for a known-answer check's message."""
    if got.shape != expected.shape:
        return f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if exact:
        wrong = int((got != expected).sum())
        return f"{wrong} of {got.numel()} {what} differ from the reference" if wrong else None
    close = torch.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)
    if bool(close.all()):
        return None
    error = (got - expected).abs().nan_to_num(float("inf")).max().item()
    return (
        f"{what}: {int((~close).sum())} of {got.numel()} off by up to {error:.3g} (tolerance {atol:g} + "
        f"{rtol:g} x |reference|)"
    )


CHECK_RAISED = "its known-answer check raised"


def _checked(kernels: Kernels, lib: ctypes.CDLL) -> str | None:
    """The verdict on a freshly loaded library: None (its layouts and known answers are right) or the error found."""
    try:
        kernels.declare(lib)
    except AttributeError as e:  # not the library of this source
        return f"the library lacks a function ({e})"
    error = kernels.layout_error(lib)
    if error is None:
        outcome = _in_own_thread(kernels.check, lib)
        if isinstance(outcome, Exception):  # a check that cannot run says nothing good about the kernel
            error = f"{CHECK_RAISED} {type(outcome).__name__}: {outcome}"
        else:
            error = outcome and f"its known-answer check found {outcome}"
    return error


def _in_own_thread(check: Callable, lib: ctypes.CDLL):
    """``check(lib)``'s answer, or the exception it raised, run in a thread of its own: the first use of a kernel
    may come from an evaluation (no_grad, inference_mode) or from the memory check's probe (its saved-tensor
    hooks would see the check's tensors), and grad mode, inference mode and those hooks are per thread."""
    outcome: list = [None]

    def run() -> None:
        try:
            with torch.enable_grad():
                outcome[0] = check(lib)
        except Exception as e:
            outcome[0] = e

    thread = threading.Thread(target=run, name="snn-kernel-check")
    thread.start()
    thread.join()
    return outcome[0]


# ----------------------------------------------------------------------------- building and caching


def _built_library(source: Path, cc: str, kernels: Kernels) -> tuple[ctypes.CDLL, str | None]:
    """(the library, its verdict: None when it passed its checks, else why not), from the cache or built now."""
    flags = [*FLAGS, *shlex.split(os.environ.get(EXTRA_FLAGS, ""))]
    try:
        return _built_with(source, cc, [*flags, OPENMP], kernels)
    except BuildError as error:  # a compiler without OpenMP (Apple's clang): the single-threaded kernel
        if _predefined(cc, tuple(flags)) is None:
            raise
        lib, verdict = _built_with(source, cc, flags, kernels)
        _warn_once(
            f"the C compiler {Path(cc).name} cannot build with OpenMP ({error}): the C kernels run single-threaded"
        )
        return lib, verdict


def _built_with(source: Path, cc: str, flags: list[str], kernels: Kernels) -> tuple[ctypes.CDLL, str | None]:
    macros = _predefined(cc, tuple(flags))
    if macros is None:
        raise BuildError(f"{Path(cc).name} refuses the flags {' '.join(flags)}")
    code = [source.read_bytes(), *(h.read_bytes() for h in sorted(source.parent.glob("*.h")))]
    key = hashlib.sha256(b"\0".join([*code, " ".join(flags).encode(), _version(cc).encode(), macros.encode()]))
    name = f"{source.stem}-{key.hexdigest()[:20]}.so"
    cache = _private_cache()
    if cache is not None:
        if not (cache / name).exists():
            _compile(cc, flags, source, cache, name)
        fd = _open_own_file(cache / name)
        if fd is not None:
            return _load_cached(cache / name, fd, kernels)
    folder = Path(tempfile.mkdtemp(prefix=_TEMPORARY))  # no trusted cache: built for this process alone
    try:
        _compile(cc, flags, source, folder, name)
        lib = _dlopen(folder / name)
        return lib, _checked(kernels, lib)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the loaded library stays mapped


def _compile(cc: str, flags: list[str], source: Path, folder: Path, name: str) -> None:
    """Compile ``source`` into ``folder / name``, atomically: a process building at the same time never loads half a file."""
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
    try:
        result = subprocess.run(
            [cc, *flags, "-o", str(scratch / name), str(source), "-lm"], capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            raise BuildError(f"{Path(cc).name} failed: {lines[-1] if lines else 'no message'}")
        os.chmod(scratch / name, 0o700)  # only its owner may write it, whatever the umask (002 gives groups)
        os.replace(scratch / name, folder / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _load_cached(path: Path, fd: int, kernels: Kernels) -> tuple[ctypes.CDLL, str | None]:
    """Load the cached library open at ``fd``; its checks' verdict from beside it, or from running them now."""
    try:
        digest = hashlib.sha256(os.pread(fd, os.fstat(fd).st_size, 0)).hexdigest()
        lib = ctypes.CDLL(f"/proc/self/fd/{fd}")  # the file checked, whatever the path now names
    except OSError:
        os.close(fd)
        raise
    _held.append(fd)
    verdict_path = path.with_name(path.name + ".verdict")
    stored = _read_verdict(verdict_path, digest)
    if stored is not None:
        kernels.declare(lib)
        return lib, stored["error"]
    start = time.perf_counter()
    error = _checked(kernels, lib)
    if error is None or not error.startswith(CHECK_RAISED):  # a check that could not run is tried again next time
        record = {"library_sha256": digest, "error": error, "check_seconds": round(time.perf_counter() - start, 4)}
        _write_private(verdict_path, json.dumps(record))
    return lib, error


def _read_verdict(path: Path, digest: str) -> dict | None:
    """The stored verdict on the library of SHA-256 ``digest``; None when there is none to trust."""
    fd = _open_own_file(path)
    if fd is None:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            record = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("library_sha256") != digest:
        return None
    return record if record.get("error") is None or isinstance(record.get("error"), str) else None


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable and writable by this user only (best effort: a cache)."""
    try:
        fd, scratch = tempfile.mkstemp(prefix=".verdict-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(scratch, path)
    except OSError:
        pass


def _dlopen(path: Path) -> ctypes.CDLL:
    """Load a library built in this process's own private folder (through its descriptor where /proc exists)."""
    if _uid() is None:  # no user ids to check (Windows): mkdtemp's folder is the user's alone
        return ctypes.CDLL(str(path))
    fd = _open_own_file(path)
    if fd is None:
        raise BuildError(f"the library built in {path.parent} is not this user's own regular file")
    if not _proc_fds():
        os.close(fd)
        return ctypes.CDLL(str(path))  # in a folder of this process's own that nobody else can write to
    try:
        lib = ctypes.CDLL(f"/proc/self/fd/{fd}")
    except OSError:
        os.close(fd)
        raise
    _held.append(fd)
    return lib


@functools.cache
def _version(cc: str) -> str:
    """The compiler's version and target (what the built library depends on beyond its source and flags)."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    target = subprocess.run([cc, "-dumpmachine"], capture_output=True, text=True, timeout=30).stdout
    return version + "\0" + target


@functools.cache
def _predefined(cc: str, flags: tuple[str, ...]) -> str | None:
    """The macros ``cc`` predefines under ``flags`` (the instruction sets it targets); None if it refuses the flags."""
    result = subprocess.run(
        [cc, *flags, "-dM", "-E", "-x", "c", "-"], input="", capture_output=True, text=True, timeout=30
    )
    return "\n".join(sorted(result.stdout.splitlines())) if result.returncode == 0 else None


# ----------------------------------------------------------------------------- trusting the cache


def _private_cache() -> Path | None:
    """The cache folder, created private (0700) if missing; None when something in it could be swapped by another user."""
    uid = _uid()
    if uid is None or not _proc_fds() or not hasattr(os, "O_NOFOLLOW"):
        return None
    base = os.environ.get("SNN_KERNEL_CACHE")
    folder = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "snn-tune"
    folder = folder.absolute()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or not _only_user_writes(info, uid):
        return None
    try:  # the folders above as named, and as they resolve (a link's target could sit in a writable folder)
        above = {*folder.parents, *folder.resolve(strict=True).parents}
        infos = [os.stat(f) for f in above]
    except OSError:
        return None
    private_gid = _private_group(uid)
    for info in infos:
        writable = info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and info.st_gid != private_gid)
        if info.st_uid not in (uid, 0) or (writable and not info.st_mode & stat.S_ISVTX):
            return None
    return folder


def _open_own_file(path: Path) -> int | None:
    """A read-only descriptor of ``path`` if it is a regular file (not a link) of this user's that neither its group
    nor others may write."""
    uid = _uid()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_uid == uid and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return fd
    os.close(fd)
    return None


def _only_user_writes(info: os.stat_result, uid: int) -> bool:
    """A folder owned by the user and writable by no one else (a group of the user's alone excepted)."""
    group_writes = info.st_mode & stat.S_IWGRP and info.st_gid != _private_group(uid)
    return info.st_uid == uid and not info.st_mode & stat.S_IWOTH and not group_writes


def _uid() -> int | None:
    """This process's effective user id; None where the platform has none."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def _proc_fds() -> bool:
    return os.path.isdir("/proc/self/fd")


@functools.cache
def _private_group(uid: int) -> int | None:
    """The user's own group (named after the user, no other members), if the system gives each user one."""
    if pwd is None:
        return None
    try:
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(user.pw_gid)
    except KeyError:
        return None
    return group.gr_gid if group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name} else None


def _warn_once(message: str) -> None:
    if message not in _told:
        _told.add(message)
        warnings.warn(message, stacklevel=4)
