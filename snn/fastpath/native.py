"""The fast paths' C kernels: compiled with the machine's C compiler on first use, cached, loaded by ctypes.

A kernel is one C file next to this module (with the headers beside it), compiled once per machine for its CPU
(``-march=native``) in about half a second. Float rounding stays IEEE's: ``-ffp-contract=off``
keeps each multiply and add apart, as torch's kernels compute them, and nothing like
``-ffast-math`` is used. The kernels parallelise with OpenMP and share torch's own runtime
(``libgomp.so.1``, already loaded with torch).

The library is cached under ``$SNN_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/snn-tune``, else
``~/.cache/snn-tune``, named by a hash of the source and headers, the compiler, its flags and the CPU. It
is loaded from there only if that folder and file belong to this user and nobody else can
write to them; otherwise it is compiled afresh into a private temporary folder, removed once
loaded. Without a compiler (or where compiling fails) ``load`` warns once and returns None, and
the caller runs its torch code, which computes the same; ``SNN_C_KERNELS=0`` chooses that torch
code outright.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp", "-shared", "-fPIC"]

_loaded: dict[str, ctypes.CDLL | None] = {}
_TEMPORARY = "snn-kernels-"  # the prefix of a build folder used once, where no private cache is


class Kernels:
    """The functions of one C file, built and loaded on first ``get()``; None there where it cannot be built.

    signatures: {function name: (restype, [argtypes])}, as ctypes declares them.
    """

    def __init__(self, source_name: str, signatures: dict):
        self.source_name, self.signatures = source_name, signatures

    def get(self) -> ctypes.CDLL | None:
        if not enabled():
            return None
        lib = load(self.source_name)
        if lib is not None and not getattr(lib, "_declared", False):
            for name, (restype, argtypes) in self.signatures.items():
                function = getattr(lib, name)
                function.restype, function.argtypes = restype, argtypes
            lib._declared = True
        return lib


def enabled() -> bool:
    """False when ``SNN_C_KERNELS=0`` turns the C kernels off (the torch and numpy paths then run)."""
    return os.environ.get("SNN_C_KERNELS", "1") != "0"


def compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the PATH; None when there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def load(source_name: str) -> ctypes.CDLL | None:
    """The compiled library of the C file ``source_name`` next to this module; None where it cannot be built."""
    if source_name not in _loaded:
        try:
            path = _build(Path(__file__).with_name(source_name))
            _loaded[source_name] = ctypes.CDLL(str(path))
            if path.parent.name.startswith(_TEMPORARY):  # no private cache: nothing is left behind
                shutil.rmtree(path.parent, ignore_errors=True)  # (the loaded library stays mapped)
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            warnings.warn(f"could not build the C kernel {source_name} ({error}); running the torch path instead",
                          stacklevel=2)
            _loaded[source_name] = None
    return _loaded[source_name]


def _build(source: Path) -> Path:
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on the PATH")
    # the source and every header beside it (what it may include) name the build
    code = [source.read_bytes(), *(h.read_bytes() for h in sorted(source.parent.glob("*.h")))]
    key = hashlib.sha256(b"\0".join([*code, " ".join(FLAGS).encode(), _identity(cc).encode()]))
    name = f"{source.stem}-{key.hexdigest()[:20]}.so"
    folder = _private_cache()
    if folder is not None and _trusted(folder / name):
        return folder / name
    folder = folder or Path(tempfile.mkdtemp(prefix=_TEMPORARY))
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
    try:
        built = scratch / name
        result = subprocess.run([cc, *FLAGS, "-o", str(built), str(source), "-lm"], capture_output=True, text=True,
                                timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(cc).name} failed: {result.stderr.strip().splitlines()[-1:]}")
        os.replace(built, folder / name)  # atomic: trials building at once never load half a file
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder / name


@functools.lru_cache(maxsize=None)
def _identity(cc: str) -> str:
    """What the built library depends on beyond its source and flags: the compiler's version and the CPU."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    return version + "\0" + _cpu()


def _private_cache() -> Path | None:
    """The cache folder, created private (0700) if missing; None when it cannot be made or is not ours alone."""
    base = os.environ.get("SNN_KERNEL_CACHE")
    if base:
        folder = Path(base)
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "snn-tune"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if _trusted(folder) else None


def _trusted(path: Path) -> bool:
    """The path exists, belongs to this user, and no one else may write to it."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return (info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            and not stat.S_ISLNK(info.st_mode))


def _cpu() -> str:
    """What ``-march=native`` compiles for: the CPU's model and flags (Linux), else the platform's name."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
