"""The C kernels are built portable, checked where they are built, cached, and loaded only from what this user built.

Each test builds into its own cache folder (tmp_path), so it sees the build, the check and the cache as a
new machine would. The tests skip without a C compiler, and fail instead under ``SNN_REQUIRE_KERNELS=1``.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import stat
import sys
import warnings

import pytest
import torch

from snn import fastpath
from snn.fastpath import fire_and_pool, native, neurons
from snn.fastpath.fire_pool import _KERNELS as FIRE_POOL
from snn.fastpath.neurons import _KERNELS as NEURONS
from snn.fastpath.poisson import _KERNELS as POISSON
from snn.models import fc_snn

from .test_fast_paths import pair, require_kernels
from .test_fire_pool import both_ways, currents


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """native as in a new process (nothing loaded, nothing warned about) with its kernel cache in tmp_path/cache."""
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_told", set())
    monkeypatch.setenv("SNN_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SNN_C_KERNELS", "1")
    monkeypatch.delenv(native.EXTRA_FLAGS, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def compiled(cache):
    require_kernels()
    return cache


def about_kernels(warned) -> list[str]:
    """The messages of the warnings caught that are about the C kernels."""
    return [str(w.message) for w in warned if "C kernel" in str(w.message) or "C compiler" in str(w.message)]


def check_must_not_run(monkeypatch, *kernels) -> None:
    def refuse_to_run(lib):
        raise AssertionError("the known-answer check ran again")

    for k in kernels:
        monkeypatch.setattr(k, "check", refuse_to_run)


def test_kernels_build_once_into_a_private_cache_with_their_verdict(compiled, monkeypatch):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for kernels in (NEURONS, FIRE_POOL, POISSON):
        assert kernels.get() is not None
    assert torch.equal(torch.rand(3), expected), "the checks must not draw from torch's generator"
    assert stat.S_IMODE(compiled.stat().st_mode) == 0o700
    assert not list(compiled.glob(".build-*")) and not list(compiled.glob(".verdict-*"))  # no scratch left
    built = sorted(p.name.split("-")[0] for p in compiled.glob("*.so"))
    assert built == ["fire_pool", "neurons", "poisson"]
    for library in compiled.glob("*.so"):
        verdict = json.loads(library.with_name(library.name + ".verdict").read_text())
        assert verdict["error"] is None and verdict["check_seconds"] > 0
        assert (
            verdict["library_sha256"]
            and stat.S_IMODE(library.with_name(library.name + ".verdict").stat().st_mode) == 0o600
        )
    # a new process: the cached library and its verdict, neither built nor checked again
    before = {p: p.stat().st_mtime_ns for p in compiled.iterdir()}
    monkeypatch.setattr(native, "_loaded", {})
    check_must_not_run(monkeypatch, NEURONS, FIRE_POOL, POISSON)
    for kernels in (NEURONS, FIRE_POOL, POISSON):
        lib = kernels.get()
        assert lib is not None and lib._name.startswith("/proc/self/fd/")  # loaded through the checked descriptor
    assert {p: p.stat().st_mtime_ns for p in compiled.iterdir()} == before


def test_the_libraries_are_portable_and_parallel():
    """No -march=native by default; on x86-64 the loops come in a baseline and an AVX2 copy; OpenMP on."""
    assert not any(flag.startswith(("-march", "-mcpu", "-mtune")) for flag in native.FLAGS)
    cc = native.compiler()
    if cc is None:
        require_kernels()
    assert "__AVX2__" not in native._predefined(cc, native.FLAGS) or platform.machine() not in ("x86_64", "AMD64")
    lib = NEURONS.get()
    assert lib.snn_openmp() > 0


# the known-answer check catches a kernel that computes wrongly: a mutation of each C file, and what it breaks
MUTATIONS = {
    "neurons.c": (
        "carry[i] = lif ? grad_h - grad_h / l->tau : grad_h;",
        "carry[i] = lif ? grad_h - grad_h / l->tau : grad_h * 0.999f;",
        "input gradients",
    ),
    "fire_pool.c": (
        "grad[nw + i] = (na & sb) ? g_t[i] : 0.0f;",  # a tie's gradient to a second neuron
        "grad[nw + i] = sb ? g_t[i] : 0.0f;",
        "input gradients",
    ),
    "poisson.c": ("acc[o * T + t] + constant[n * O + o];", "acc[o * T + t];", "currents"),  # pixels at 1 lost
}


@pytest.mark.parametrize("source", sorted(MUTATIONS))
def test_a_kernel_that_computes_wrongly_is_refused_with_one_warning(source, compiled, monkeypatch, tmp_path):
    right, wrong, what = MUTATIONS[source]
    sources = tmp_path / "sources"
    shutil.copytree(native.SOURCES, sources, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    text = (sources / source).read_text()
    assert right in text, f"{source} changed: update this test's mutation"
    (sources / source).write_text(text.replace(right, wrong, 1))
    monkeypatch.setattr(native, "SOURCES", sources)
    kernels = {k.source_name: k for k in (NEURONS, FIRE_POOL, POISSON)}[source]
    with pytest.warns(UserWarning, match=f"the C kernel {source} is refused: its known-answer check found .*{what}"):
        assert kernels.get() is None
    (verdict,) = compiled.glob("*.verdict")
    assert what in json.loads(verdict.read_text())["error"]
    # a new process: refused again from the stored verdict, the check not run again
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_told", set())
    check_must_not_run(monkeypatch, kernels)
    with pytest.warns(UserWarning, match=f"{source} is refused: .*{what}") as warned:
        assert kernels.get() is None
    assert len(about_kernels(warned)) == 1


def test_the_reference_path_runs_where_a_kernel_is_refused(compiled, monkeypatch):
    """fire_pool.c refused: the CSNN block is pool(neuron(x)) with neurons.c, the same as spikingjelly's."""
    monkeypatch.setattr(FIRE_POOL, "check", lambda lib: "a difference")
    with pytest.warns(UserWarning, match="fire_pool.c is refused: its known-answer check found a difference"):
        x = currents((3, 2, 4, 8, 8), False, seed=2)
        upstream = torch.randn(3, 2, 4, 4, 4)
        (out, v, grad), (ref_out, ref_v, ref_grad) = both_ways(pair("if", "atan"), x, None, upstream)
    assert native._loaded["fire_pool.c"] is None and native._loaded["neurons.c"] is not None
    assert torch.equal(out, ref_out) and torch.equal(v, ref_v)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_a_struct_declared_otherwise_in_ctypes_is_refused(compiled):
    class Layer(ctypes.Structure):  # tau as a double: not neurons.c's Layer
        _fields_ = [
            ("T", ctypes.c_int64),
            ("M", ctypes.c_int64),
            ("tau", ctypes.c_double),
            ("threshold", ctypes.c_float),
        ]

    kernels = native.Kernels(
        "neurons.c", NEURONS.signatures, {"Layer": Layer, "Surrogate": neurons.Surrogate}, NEURONS.check
    )
    with pytest.warns(
        UserWarning,
        match=r"neurons.c is refused: struct layout Layer: 24 bytes in C, 32 bytes in "
        r"ctypes",
    ):
        assert kernels.get() is None


def test_a_check_that_raises_refuses_the_kernel_in_this_process_and_is_tried_again_in_the_next(compiled, monkeypatch):
    monkeypatch.setattr(POISSON, "check", lambda lib: 1 / 0)
    with pytest.warns(UserWarning, match="poisson.c is refused: its known-answer check raised ZeroDivisionError"):
        assert POISSON.get() is None
    assert not list(compiled.glob("poisson-*.verdict"))  # a check that could not run decides nothing for good
    monkeypatch.undo()
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv("SNN_KERNEL_CACHE", str(compiled))
    assert POISSON.get() is not None  # a new process checks it again


def _inside_saved_tensor_hooks():
    """As in the memory check's probe: every tensor autograd saves goes through a pack hook of the caller's."""
    packed = []

    def pack(tensor):
        packed.append(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for kernels in (NEURONS, FIRE_POOL, POISSON):
            assert kernels.get() is not None
    assert packed == []  # the checks' own tensors never reached the caller's hooks


def _without_autograd(context):
    def first_use():
        with context():
            for kernels in (NEURONS, FIRE_POOL, POISSON):
                assert kernels.get() is not None

    return first_use


@pytest.mark.parametrize(
    "first_use",
    [_without_autograd(torch.no_grad), _without_autograd(torch.inference_mode), _inside_saved_tensor_hooks],
    ids=["no_grad", "inference_mode", "saved_tensors_hooks"],
)
def test_a_first_use_without_autograd_or_under_the_callers_hooks_still_checks_the_kernels(compiled, first_use):
    """The first use of a kernel may be an evaluation (a report's predictions) or the memory check's probe, with its
    saved-tensor hooks; the known-answer check runs its own forward and backward apart from them, and passes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refused kernel warns
        first_use()
    for library in compiled.glob("*.so"):
        assert json.loads(library.with_name(library.name + ".verdict").read_text())["error"] is None


def test_under_a_global_module_hook_the_kernels_are_neither_checked_nor_refused_until_it_is_gone(compiled):
    """A global forward hook (torch's ModuleTracker, spikingjelly's op counter) would see the known-answer check's
    reference modules and can break them: while one is registered, a first use runs the reference path, stores
    no verdict and leaves the kernel to be checked at the next use without it."""
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, output: seen.append(module))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # neither refused nor warned about
            assert NEURONS.get() is None
    finally:
        handle.remove()
    assert seen == [] and not list(compiled.glob("*.verdict"))  # the check never ran under the hook
    assert NEURONS.get() is not None
    verdict = next(compiled.glob("neurons-*.verdict"))
    assert json.loads(verdict.read_text())["error"] is None


def test_without_a_compiler_the_reference_paths_run_with_one_warning(cache, monkeypatch):
    monkeypatch.setattr(native, "compiler", lambda: None)
    x = currents((4, 2, 3, 8, 8), False, seed=9)
    with pytest.warns(UserWarning, match="no C compiler") as warned:
        fused, reference = pair("if", "atan")
        pool = fastpath.FastMaxPool2d(2, step_mode="m")
        assert torch.equal(fire_and_pool(fused, pool, x), pool(reference(x)))
        torch.manual_seed(1)
        fc_snn(T=5)(torch.rand(3, 1, 28, 28))
    assert len(about_kernels(warned)) == 1
    assert native._loaded == {"fire_pool.c": None, "neurons.c": None, "poisson.c": None}
    assert not cache.exists() or not list(cache.iterdir())


def test_a_compiler_without_openmp_builds_the_single_threaded_kernels(compiled, monkeypatch, tmp_path):
    """As Apple's clang: -fopenmp refused. The kernels are built without it, checked, and compute the same."""
    fake = tmp_path / "cc-without-openmp"
    fake.write_text(
        f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && {{ echo "clang: error: unsupported '
        f'option \'-fopenmp\'" >&2; exit 1; }}; done\nexec {native.compiler()} "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with pytest.warns(UserWarning, match="cannot build with OpenMP .* the C kernels run single-threaded") as warned:
        lib = FIRE_POOL.get()
        assert NEURONS.get() is not None
    assert len(about_kernels(warned)) == 1
    assert lib is not None and lib.snn_openmp() == 0
    x = currents((3, 2, 4, 12, 12), True, seed=4)
    upstream = torch.randn(3, 2, 4, 6, 6)
    (out, v, grad), (ref_out, ref_v, ref_grad) = both_ways(pair("lif", "sigmoid"), x, None, upstream)
    assert torch.equal(out, ref_out) and torch.equal(v, ref_v)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_the_baseline_copy_of_the_loops_computes_the_same_floats(compiled, monkeypatch):
    """Built with -DSNN_ONE_VERSION (only the copy for the compiler's baseline target, SSE2 on x86-64): it passes
    the check, and its spikes, voltages and gradients are bit-identical to the default library's."""
    default = FIRE_POOL.get()
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setenv(native.EXTRA_FLAGS, "-DSNN_ONE_VERSION")
    baseline = FIRE_POOL.get()
    assert baseline is not None and baseline._name != default._name
    assert len(list(compiled.glob("fire_pool-*.so"))) == 2  # the flags name the build
    x = currents((4, 8, 16, 14, 14), False, seed=6).requires_grad_()
    upstream = torch.randn(4, 8, 16, 7, 7)
    spec = fastpath.fire_pool._fusable(*pair("if", "atan")[:1], fastpath.FastMaxPool2d(2, step_mode="m"), x, None)
    results = []
    for lib in (default, baseline):
        pooled, v_last, count = fastpath.fire_pool._FirePool.apply(x, spec, lib)
        (grad,) = torch.autograd.grad(pooled, x, upstream)
        results.append((pooled, v_last, count, grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_extra_flags_are_keyed_by_what_the_compiler_targets_under_them(compiled):
    """-march=native (or any flag) in SNN_KERNEL_CFLAGS names another library: the key holds the compiler's
    predefined macros under the flags, which name the instruction sets it targets."""
    cc = native.compiler()
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the instruction-set macros checked are x86-64's")
    plain, avx2 = native._predefined(cc, native.FLAGS), native._predefined(cc, (*native.FLAGS, "-mavx2"))
    assert "__AVX2__" not in plain and "#define __AVX2__ 1" in avx2
    assert native._predefined(cc, (*native.FLAGS, "-mno-such-flag")) is None


# ----------------------------------------------------------------------------- trusting the cache


def private_build(monkeypatch) -> list:
    """Record the folders the kernels are built in."""
    folders = []
    real = native._compile

    def compile_and_remember(cc, flags, source, folder, name):
        folders.append(folder)
        return real(cc, flags, source, folder, name)

    monkeypatch.setattr(native, "_compile", compile_and_remember)
    return folders


@pytest.mark.parametrize(
    "case",
    [
        "folder writable by others",
        "folder above writable by others",
        "folder above writable by its group",
        "no /proc",
        "no user ids",
    ],
)
def test_a_cache_someone_else_could_swap_is_not_used(case, compiled, monkeypatch, tmp_path):
    """The kernel is then built afresh in a private temporary folder, loaded, and that folder removed."""
    above = tmp_path / "shared"
    monkeypatch.setenv("SNN_KERNEL_CACHE", str(above / "cache"))
    above.mkdir()
    (above / "cache").mkdir(mode=0o700)
    if case == "folder writable by others":
        os.chmod(above / "cache", 0o777)
    elif case == "folder above writable by others":
        os.chmod(above, 0o777)
    elif case == "folder above writable by its group":
        os.chmod(above, 0o775)
        if native._private_group(os.geteuid()) == os.stat(above).st_gid:
            if os.geteuid() != 0:
                pytest.skip("the folder's group is the user's own, which may write")
            os.chown(above, -1, 1)  # root: give it another group
    elif case == "no /proc":
        monkeypatch.setattr(native, "_proc_fds", lambda: False)
    else:
        monkeypatch.setattr(native, "_uid", lambda: None)
    folders = private_build(monkeypatch)
    assert POISSON.get() is not None
    assert folders and (above / "cache") not in folders and not folders[0].exists()
    assert not list((above / "cache").iterdir())


def test_a_cache_folder_under_a_sticky_shared_folder_is_used(compiled, monkeypatch, tmp_path):
    """As under /tmp: writable by all, but with the sticky bit nobody can rename another's folder."""
    above = tmp_path / "sticky"
    above.mkdir()
    os.chmod(above, 0o1777)
    monkeypatch.setenv("SNN_KERNEL_CACHE", str(above / "cache"))
    assert POISSON.get() is not None
    assert list((above / "cache").glob("poisson-*.so"))


@pytest.mark.parametrize("case", ["a symbolic link", "writable by others", "writable by its group", "another library"])
def test_a_cached_library_that_is_not_the_users_own_build_is_not_loaded(case, compiled, monkeypatch, tmp_path):
    assert NEURONS.get() is not None
    (library,) = compiled.glob("neurons-*.so")
    monkeypatch.setattr(native, "_loaded", {})
    if case == "a symbolic link":  # to a file elsewhere, even one of the user's
        elsewhere = tmp_path / "elsewhere.so"
        library.rename(elsewhere)
        library.symlink_to(elsewhere)
    elif case == "writable by others":
        os.chmod(library, 0o777)
    elif case == "writable by its group":
        os.chmod(library, 0o770)
    else:  # another library put in its place, its verdict kept: checked anew, and refused
        assert POISSON.get() is not None
        (other,) = compiled.glob("poisson-*.so")
        shutil.copy(other, tmp_path / "other.so")
        os.replace(tmp_path / "other.so", library)  # a new file: the one loaded earlier stays mapped as it was
    folders = private_build(monkeypatch)
    if case == "another library":
        with pytest.warns(UserWarning, match="neurons.c is refused: the library lacks a function"):
            assert NEURONS.get() is None
        assert folders == []
        return
    assert NEURONS.get() is not None
    assert folders and compiled not in folders  # built privately instead


def test_a_library_built_under_umask_002_is_loaded_from_the_cache(compiled, monkeypatch):
    """With user private groups (umask 002) the built file would be group-writable: it is made the owner's alone."""
    old = os.umask(0o002)
    try:
        assert POISSON.get() is not None
    finally:
        os.umask(old)
    (library,) = compiled.glob("poisson-*.so")
    assert stat.S_IMODE(library.stat().st_mode) == 0o700
    monkeypatch.setattr(native, "_loaded", {})
    folders = private_build(monkeypatch)
    assert POISSON.get() is not None and folders == []  # from the cache, not built again


@pytest.mark.skipif(sys.platform != "linux", reason="dlopen's reuse of a path it has loaded: glibc's")
def test_libraries_loaded_through_descriptors_stay_apart(compiled):
    """Each library keeps its descriptor open: a number reused for the next library would load the first again."""
    libs = [k.get() for k in (NEURONS, FIRE_POOL, POISSON)]
    assert len({lib._name for lib in libs}) == 3
    assert hasattr(libs[1], "fire_pool_forward") and hasattr(libs[2], "poisson_current_forward")
