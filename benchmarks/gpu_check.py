"""One GPU check of the project in at most 8 minutes: CUDA tests, training speed, a short search.

    python -m benchmarks.gpu_check                       # on a machine with one CUDA GPU
    python -m benchmarks.gpu_check --out results/gpu_check/ --budget 480
    python -m benchmarks.gpu_check --cpu-parts           # no GPU: only the parts that need none

Three parts, each a subprocess with its own time limit carved out of ``--budget`` (seconds):

1. ``python -m pytest tests -k cuda``: the tests that exercise CUDA (they skip without a GPU).
2. ``python -m benchmarks.train_speed --device cuda --json``, once per model: project vs the
   seed's loop, peak memory, and 1/2/4/8/16 trials training at once on the GPU (aggregate
   training images/s, peak GPU memory per trial).
3. ``python -m tuning.search csnn --preset smoke --gpus-per-trial 0.125``: a short CSNN search
   into a temporary results folder (run as a command: this module never imports tuning).

Every figure goes into ``gpu_check.json`` and ``gpu_check.md`` under ``--out``. The exit status
is 0 when every part succeeded, 1 when one failed or ran out of time, 2 when no GPU is visible
and ``--cpu-parts`` was not given (one line on stderr). ``--cpu-parts`` runs the same parts on
the CPU at a smaller size (the CUDA tests then report as skipped), with or without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROG = "python -m benchmarks.gpu_check"
DEFAULT_OUT = Path("results/gpu_check")
DEFAULT_BUDGET_S = 480.0  # 8 minutes for all parts together
# share of the budget each part may use; what a part leaves unused goes to the parts after it
BUDGET_SHARES = {"cuda_tests": 0.2, "train_speed_fc": 0.22, "train_speed_csnn": 0.22, "search": 0.36}
JSON_NAME, MARKDOWN_NAME = "gpu_check.json", "gpu_check.md"


@dataclass
class PartResult:
    """What one part's subprocess did: its command, exit status, duration (s) and figures."""

    name: str
    command: list[str]
    returncode: int | None = None  # None: killed at its time limit
    seconds: float = 0.0
    limit_s: float = 0.0
    figures: dict = field(default_factory=dict)
    output_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# ----------------------------------------------------------------------------- running a part


def run_part(
    name: str, command: list[str], figures: Callable[[str], dict], limit_s: float, env: dict[str, str]
) -> PartResult:
    """Run ``command`` in its own process group, killed (the whole group) after ``limit_s`` seconds.

    ``figures`` turns the part's output (stdout and stderr) into its figures.
    """
    result = PartResult(name, command, limit_s=round(limit_s, 1))
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=max(limit_s, 1.0))
        result.returncode = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the part's own group: its pytest, trials, Ray driver
        output, _ = proc.communicate()
        output += f"\n[{PROG}] {name}: killed after its {limit_s:.0f} s limit"
    result.seconds = round(time.perf_counter() - start, 1)
    result.output_tail = output[-4000:]
    result.figures = figures(output)
    return result


def pytest_figures(output: str) -> dict:
    """Counts from pytest's summary line ("3 passed, 2 skipped, 40 deselected in 5.1s")."""
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", summary)}


def train_speed_figures(output: str) -> dict:
    """train_speed's JSON object (its last stdout line), or {} when it did not finish."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return {}
    return {}


def search_results(results_dir: Path) -> dict:
    """Every JSON file the search wrote whose name says best or summary, by relative path."""
    found = {}
    for path in sorted(results_dir.rglob("*.json")):
        if any(word in path.name for word in ("best", "summary")):
            try:
                found[str(path.relative_to(results_dir))] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
    return found


# ----------------------------------------------------------------------------- the parts


Part = tuple[list[str], Callable[[str], dict]]  # a command and what reads its figures


def parts_to_run(cpu_parts: bool, results_dir: Path, data_dir: str | None) -> dict[str, Part]:
    """Each part by name, in the order they run."""
    py = sys.executable
    data = ["--data-dir", data_dir] if data_dir else []
    if cpu_parts:  # the same parts, sized for a CPU
        speed = ["--device", "cpu", "--repeats", "1", "--no-memory", "--batches", "2"]
        search = ["--device", "cpu", "--gpus-per-trial", "0"]
    else:
        speed = ["--device", "cuda", "--repeats", "2"]
        search = ["--gpus-per-trial", "0.125"]
    return {
        "cuda_tests": ([py, "-m", "pytest", "tests", "-k", "cuda", "-q", "-p", "no:cacheprovider"], pytest_figures),
        "train_speed_fc": (
            [py, "-m", "benchmarks.train_speed", "--model", "fc", "--json", *speed, *data],
            train_speed_figures,
        ),
        "train_speed_csnn": (
            [py, "-m", "benchmarks.train_speed", "--model", "csnn", "--json", *speed, *data],
            train_speed_figures,
        ),
        "search": (
            [
                py,
                "-m",
                "tuning.search",
                "csnn",
                "--preset",
                "smoke",
                *search,
                "--results-dir",
                str(results_dir),
                "--name",
                "gpu-check",
                *data,
            ],
            lambda _output: {"results": search_results(results_dir)},
        ),
    }


def run_all(cpu_parts: bool, budget_s: float, data_dir: str | None, log) -> dict:
    """Run every part within ``budget_s`` seconds; the check's JSON-ready record."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    deadline = time.perf_counter() + budget_s
    parts: list[PartResult] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        todo = parts_to_run(cpu_parts, Path(tmp), data_dir)
        for i, (name, (command, figures)) in enumerate(todo.items()):
            left = deadline - time.perf_counter()
            later = sum(BUDGET_SHARES[n] for n in list(todo)[i + 1 :])
            limit = left * BUDGET_SHARES[name] / (BUDGET_SHARES[name] + later)
            log(f"{name}: {' '.join(command[1:])} (limit {limit:.0f} s)")
            part = run_part(name, command, figures, limit, env)
            log(f"{name}: {'ok' if part.ok else 'FAILED'} in {part.seconds:.0f} s")
            parts.append(part)
    return {
        "cpu_parts": cpu_parts,
        "budget_s": budget_s,
        "ok": all(p.ok for p in parts),
        "environment": environment(),
        "parts": [asdict(p) | {"ok": p.ok} for p in parts],
    }


def environment() -> dict:
    """The GPU, torch and the git commit the figures belong to."""
    import torch

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "git_commit": commit or None}


# ----------------------------------------------------------------------------- the report


def markdown(record: dict) -> str:
    """The check as markdown: one table of parts, then train_speed's tables."""
    from .train_speed import format_table

    env = record["environment"]
    lines = [
        f"# GPU check ({'CPU parts only' if record['cpu_parts'] else env['gpu']})",
        "",
        f"torch {env['torch']}, CUDA {env['cuda']}, commit {env['git_commit']}, budget {record['budget_s']:.0f} s",
        "",
        "| part | status | seconds | limit (s) | figures |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for p in record["parts"]:
        status = "ok" if p["ok"] else ("timed out" if p["returncode"] is None else f"failed (exit {p['returncode']})")
        lines.append(f"| {p['name']} | {status} | {p['seconds']:.0f} | {p['limit_s']:.0f} | {_headline(p)} |")
    for p in record["parts"]:
        if p["name"].startswith("train_speed") and p["figures"].get("models"):
            lines += ["", f"## {p['name']}", "", format_table(p["figures"])]
    return "\n".join(lines) + "\n"


def _headline(part: dict) -> str:
    figures = part["figures"]
    if part["name"] == "cuda_tests":
        return ", ".join(f"{n} {word}" for word, n in figures.items()) or "-"
    if part["name"].startswith("train_speed"):
        return (
            ", ".join(
                f"{m} train {e['train_images_per_s']['ratio']:.2f}x, eval {e['eval_images_per_s']['ratio']:.2f}x"
                for m, e in figures.get("models", {}).items()
            )
            or "-"
        )
    return f"{len(figures.get('results', {}))} result files read" if figures else "-"


def write(record: dict, out: Path) -> tuple[Path, Path]:
    """gpu_check.json and gpu_check.md under ``out``, each written whole (temporary file, then rename)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = out / JSON_NAME, out / MARKDOWN_NAME
    for path, text in zip(paths, (json.dumps(record, indent=2), markdown(record))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 all parts ok, 1 a part failed, 2 no GPU (without --cpu-parts).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for {JSON_NAME} and {MARKDOWN_NAME} (default {DEFAULT_OUT}/)",
    )
    parser.add_argument("--cpu-parts", action="store_true", help="run only what needs no GPU, on the CPU")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all parts (default 480)")
    parser.add_argument(
        "--data-dir", default=None, help="folder holding MNIST/raw (default $SNN_DATA_DIR, else ./data)"
    )
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.exit(2, f"{PROG}: error: --budget must be > 0 seconds, got {args.budget}\n")
    if not args.cpu_parts and not _gpu_visible():
        parser.exit(2, f"{PROG}: error: no CUDA GPU is visible; run with --cpu-parts for the parts that need none\n")
    log = lambda msg: print(f"[{PROG}] {msg}", file=sys.stderr, flush=True)
    record = run_all(args.cpu_parts, args.budget, args.data_dir, log)
    json_path, md_path = write(record, args.out)
    print(markdown(record))
    log(f"wrote {json_path} and {md_path}")
    return 0 if record["ok"] else 1


def _gpu_visible() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # a broken CUDA install reads as no GPU: the one-line error says what to do
        return False


if __name__ == "__main__":
    sys.exit(main())
