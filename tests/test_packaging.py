"""The package as a user installs it: a wheel in a fresh virtual environment, used from a folder outside the checkout.

The wheel is built from this checkout without downloading anything (no build isolation: the test
environment's setuptools builds it); the new environment sees the test environment's packages
(torch, Ray, ...) through a path file, but not the checkout, whose editable install is not read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def _checkout_files() -> list[str]:
    """The checkout's files: git's list (tracked, and untracked ones it does not ignore) in a git checkout; in a
    copy without .git (as .ci/run makes), every file but the virtual environment, caches and build outputs."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    if listed.returncode == 0:
        names = filter(None, listed.stdout.split("\0"))
    else:
        top = {".venv", ".git", "build", "dist", "results", "data", ".pytest_cache", ".ruff_cache"}
        names = (
            str(path.relative_to(ROOT))
            for path in ROOT.rglob("*")
            if path.relative_to(ROOT).parts[0] not in top
            and "__pycache__" not in path.parts
            and not any(part.endswith(".egg-info") for part in path.parts)
        )
    return sorted(name for name in names if (ROOT / name).is_file())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A fresh virtual environment holding the wheel built from this checkout."""
    base = tmp_path_factory.mktemp("wheel")
    # every command below sees neither the checkout (PYTHONPATH: an in-process search of an earlier test puts it
    # there for its Ray workers, and pip would then find snn-tune installed) nor the test environment's venv
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    source = base / "source"  # a copy, so that the build leaves nothing in the checkout
    for name in _checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        base / "dist",
        source,
        cwd=base,
        env=env,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((base / "dist").glob("snn_tune-*.whl"))
    venv = base / "venv"
    assert run(sys.executable, "-m", "venv", venv, cwd=base, env=env).returncode == 0
    python = venv / "bin" / "python"
    site = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=base, env=env).stdout.strip()
    )
    (site / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, Ray, ... (no .pth)
    installed = run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=base, env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    work = base / "elsewhere"
    work.mkdir()
    return {"python": python, "bin": venv / "bin", "env": env, "work": work, "wheel": wheel, "site": site}


def test_the_wheel_holds_the_package_its_spaces_and_kernels_and_no_benchmarks(installed):
    import zipfile

    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert {
        "tuning/search_spaces/csnn.yaml",
        "tuning/search_spaces/fc-cpu.yaml",
        "snn/fastpath/neurons.c",
        "snn/fastpath/neuron_step.h",
    } <= set(names)
    assert not [n for n in names if n.startswith(("benchmarks/", "examples/", "tests/"))]
    probe = run(
        installed["python"],
        "-c",
        "import snn, tuning, importlib.util; print(snn.__file__); print(importlib.util.find_spec('benchmarks'))",
        cwd=installed["work"],
        env=installed["env"],
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    location, benchmarks = probe.stdout.split()
    assert location.startswith(str(installed["site"])), location
    assert benchmarks == "None"


def test_the_installed_commands_search_and_report_from_elsewhere(installed, data_root):
    env = {**installed["env"], "SNN_DATA_DIR": str(data_root)}
    search = run(
        installed["bin"] / "snn-tune",
        "search",
        "fc",
        "--preset",
        "smoke",
        "--trials",
        "3",
        "--epochs-per-trial",
        "2",
        "--retrain-epochs",
        "1",
        "--results-dir",
        "results",
        "--name",
        "smoke",
        "--no-dashboard",
        cwd=installed["work"],
        env=env,
    )
    assert search.returncode == 0, search.stdout[-2000:] + search.stderr[-2000:]
    folder = installed["work"] / "results" / "smoke"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["trials"]["total"] == 3
    assert Path(json.loads((folder / "search.json").read_text())["space_file"]).is_relative_to(installed["site"])
    (folder / "report.html").unlink()
    report = run(installed["python"], "-m", "tuning.report", folder, cwd=installed["work"], env=env)
    assert report.returncode == 0, report.stderr
    assert (folder / "report.html").stat().st_size > 100_000
    shipped = run(
        installed["bin"] / "snn-tune", "search", "--space", "csnn-cpu", "--trials", "0", cwd=installed["work"], env=env
    )
    assert shipped.returncode == 2 and "--trials must be an integer >= 1" in shipped.stderr
