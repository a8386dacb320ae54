"""The HTML report of one experiment: ``python -m tuning.report results/<experiment> [--out FILE]``.

Built from the experiment folder's result files alone (``tuning.report.folder``), so it can be
rebuilt at any time, on any machine, also while a search runs or after it was cut short: a
file that is missing or not of the search's layout becomes a note in the page, not an error.
The page is one self-contained file: plotly.js is embedded once in its head, and nothing is
fetched from anywhere. It is written to the experiment folder, or with ``--out`` anywhere else
(a folder that is someone else's, or read-only, can be reported on too).
"""

from __future__ import annotations

import sys
from pathlib import Path

from snn.cli import Parser, fail, unwritable
from snn.io import write_text

from .. import experiment as files
from . import figures
from .folder import ExperimentError, MissingData, read_experiment
from .page import Section, render_page

SECTIONS = (
    Section(
        "learning-curves",
        "Best trial: learning curves",
        "Accuracy and loss per epoch of the trial the search ranked best, as the seed report plots them.",
        figures.learning_curves,
    ),
    Section(
        "retrain-curves",
        "Retrain of the best configuration",
        "The best configuration trained again for the full epochs; the band spans mean ± std across seeds.",
        figures.retrain_curves,
    ),
    Section(
        "trial-curves",
        "Every trial",
        "Each trial's tuned metric per epoch. Lines that end in an x were stopped early by ASHA.",
        figures.trial_curves,
    ),
    Section(
        "history",
        "Optimisation history",
        "Each trial's best result and the best so far: a flat line at the end means more trials were unlikely to help.",
        figures.optimisation_history,
    ),
    Section(
        "parallel",
        "Hyperparameters of all trials",
        "One axis per searched hyperparameter (categoricals as their choices, log-scale ones on a log axis); "
        "drag along an axis to select a range.",
        figures.parallel_coordinates,
    ),
    Section(
        "importance",
        "Hyperparameter importance",
        "Optuna's importance evaluators over the trials that ran to their last epoch, from the search's own study "
        "(optuna.journal).",
        figures.param_importances,
    ),
    Section(
        "param-vs-result",
        "Each hyperparameter against the result",
        "A red panel title and band: the best value sits within 5% of an end of its range "
        "(on a log scale for log-scale parameters), so the range should be widened.",
        figures.param_vs_result,
    ),
    Section(
        "pareto",
        "Accuracy against synaptic operations",
        "Every trial at its last epoch; the Pareto front of the trials that ran all their epochs in blue, "
        "dominated ones in grey, stopped and silent ones as grey crosses; the seed's configuration and the "
        "retrained choice marked.",
        figures.pareto,
    ),
    Section(
        "front-networks",
        "The networks on the front",
        "Each network on the Pareto front by its shape, with its accuracy at its last epoch and its synaptic "
        "operations per image.",
        figures.front_networks,
    ),
    Section(
        "costs",
        "What the networks spend",
        "Accuracy, spikes, synaptic operations, the dense equivalent's MACs and an energy estimate, per test "
        "image, for the seed's configuration and the selected one.",
        figures.cost_table,
    ),
    Section(
        "spikes-per-layer",
        "Spikes per layer",
        "Spikes per test image of each spiking layer of the selected configuration, summed over the T steps.",
        figures.spikes_per_layer,
    ),
    Section(
        "firing-rates",
        "Firing rates",
        "Mean spikes per neuron per time step of each spiking layer, on the test set.",
        figures.firing_rates,
    ),
    Section(
        "samples",
        "Predictions on test images",
        "Ten random test images with their true and predicted labels (the seed's figure).",
        figures.sample_predictions,
    ),
    Section(
        "confusion",
        "Confusion matrix",
        "The retrained model on the test set: counts, coloured by the share of each true digit.",
        figures.confusion_matrix,
    ),
)


def build_report(experiment_dir: Path | str, out: Path | str | None = None) -> Path:
    """Write the report of ``experiment_dir`` to ``out`` (default ``<experiment_dir>/report.html``); its path.

    Raises ExperimentError when the folder is not an experiment, or when ``out`` cannot be
    written (checked before any figure is drawn).
    """
    path = Path(out) if out is not None else Path(experiment_dir) / files.REPORT
    exp = read_experiment(experiment_dir)
    check_writable(path, default=out is None)
    drawn, notes = [], []
    for section in SECTIONS:
        try:
            drawn.append((section, section.draw(exp)))
        except MissingData as e:
            notes.append((section, str(e)))
            drawn.append((section, None))
        except Exception as e:  # a figure's bug must not cost the user the rest of the report
            print(f"tuning.report: warning: {section.heading}: {type(e).__name__}: {e}", file=sys.stderr)
            notes.append((section, f"could not be drawn ({type(e).__name__}: {e})"))
            drawn.append((section, None))
    try:
        write_text(path, render_page(exp, drawn, notes))
    except OSError as e:  # the checks above passed, then the disk said no (full, a race)
        raise ExperimentError(f"cannot write {path} ({e.strerror or e}){_elsewhere(out is None)}") from None
    return path


def check_writable(path: Path, default: bool) -> None:
    """ExperimentError unless a file can be written at ``path`` (atomically: a new file beside it, renamed)."""
    if path.is_dir():
        raise ExperimentError(f"{path} is a folder, not a file{_elsewhere(default)}")
    reason = unwritable(path.parent)
    if reason:
        raise ExperimentError(f"cannot write {path}: {reason}{_elsewhere(default)}")


def _elsewhere(default: bool) -> str:
    return "; give --out FILE to write the report elsewhere" if default else ""


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m tuning.report",
        description="Build results/<experiment>/report.html from an experiment folder's result files.",
    )
    parser.add_argument("experiment", type=Path, help="the experiment folder, e.g. results/fc-search")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the report here instead of EXPERIMENT/report.html (for a folder you cannot write)",
    )
    args = parser.parse_args(argv)
    try:
        path = build_report(args.experiment, args.out)
    except ExperimentError as e:
        fail(f"python -m tuning.report: error: {e}")
    print(path)
    return 0
