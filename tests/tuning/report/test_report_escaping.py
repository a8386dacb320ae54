"""No field of any file the report reads comes out live in report.html.

A crafted experiment folder (docs/security.md recommends the report for looking at someone else's)
gets HTML in every string field, and in a second version in every number field too, of every
file the report reads: summary.json, best_config.json, trials.csv, trial_metrics.csv,
retrain/metrics.csv and the seeds' own, pareto.csv, predictions.npz, and the Optuna journal's
study, parameter names and choices. The page must hold no element, attribute or script that
the crafted values brought: text is escaped by the template, and the figures' strings are JSON
in which plotly escapes ``<``, ``>`` and ``/``, so ``</script>`` cannot end a script early.
"""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pytest

from tuning.report.build import SECTIONS, build_report

# What a page of the report is made of; anything else came from a crafted value.
PAGE_TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "script",
    "body",
    "main",
    "h1",
    "h2",
    "h3",
    "section",
    "div",
    "table",
    "tr",
    "th",
    "td",
    "p",
    "b",
    "span",
    "ul",
    "li",
    "footer",
    "code",
}
MARK = "window.__xss=1"  # what every payload would run


class Payloads:
    """A distinct payload per crafted value, the same one for the same original (so trial ids still match);
    the values in ``keep`` stay as they are."""

    def __init__(self, keep: frozenset[str] = frozenset()) -> None:
        self.by_original: dict[str, str] = {}
        self.keep = keep

    def __call__(self, original: object) -> str:
        if original in self.keep:
            return original
        key = repr(original)
        if key not in self.by_original:
            n = len(self.by_original)
            self.by_original[key] = (
                f'</script><script>{MARK}</script><img src=x onerror="{MARK}">"><svg onload={MARK}>{{{{7*7}}}}p{n}'
            )
        return self.by_original[key]

    @property
    def all(self) -> list[str]:
        return list(self.by_original.values())


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def crafted_json(value, payload: Payloads, numbers: bool, keys: bool = False):
    """``value`` with every string (and number) replaced by a payload; dict keys too where ``keys``."""
    if isinstance(value, dict):
        return {
            (payload(k) if keys else k): crafted_json(v, payload, numbers, keys=k in DATA_KEYS)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [crafted_json(v, payload, numbers, keys) for v in value]
    if isinstance(value, str) or (numbers and is_number(value)):
        return payload(value)
    return value


DATA_KEYS = {"space", "fixed", "versions", "config", "when"}  # summary.json mappings whose keys are data


def number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def craft_csv(path: Path, payload: Payloads, numbers: bool, extra_columns: dict[str, str] | None = None) -> None:
    """Every text cell (and number cell) and every config/ column name replaced; ``extra_columns`` added."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    header = [f"config/{payload(c.removeprefix('config/'))}" if c.startswith("config/") else c for c in rows[0]]
    body = [
        [payload(cell) if cell and (numbers or not number_text(cell)) else cell for cell in row] for row in rows[1:]
    ]
    for name, value in (extra_columns or {}).items():
        header.append(name)
        for row in body:
            row.append(value)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *body])
    path.write_text(buffer.getvalue())


def craft_study(folder: Path, payload: Payloads, numbers: bool) -> None:
    """optuna.journal anew: a study, parameter names, categorical choices and user attributes that are payloads."""
    (folder / "optuna.journal").unlink()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal")))
    study = optuna.create_study(study_name=payload("study"), storage=storage, direction="maximize")
    lr, neuron = payload("lr"), payload("neuron")
    distributions = {
        lr: optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        neuron: optuna.distributions.CategoricalDistribution([payload("lif"), payload("plif")]),
    }
    for k in range(6):
        study.add_trial(
            optuna.trial.create_trial(
                params={lr: 1e-4 * (1.5**k), neuron: payload("lif" if k % 2 else "plif")},
                distributions=distributions,
                value=0.5 + 0.05 * k,
                user_attrs={"ray_trial_id": payload(f"t000{k}")},
            )
        )


def craft_predictions(folder: Path, payload: Payloads, numbers: bool) -> None:
    if not numbers:
        return  # numbers only: the arrays hold no text
    path = folder / "retrain" / "predictions.npz"
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays["labels"] = np.array([payload("label")] * len(arrays["labels"]))
    np.savez(path, **arrays)


# The words the folder's layout is made of: kept in the "names" variant, so that the figures are drawn with
# the payloads in what they label (trial ids, parameter names and values, layers, the study).
LAYOUT_WORDS = frozenset(
    {
        "test_acc",
        "val_acc",
        "float",
        "int",
        "categorical",
        "complete",
        "TERMINATED",
        "ERROR",
        "True",
        "False",
        "fc",
        "max",
        "rate_sn",
        "test_spikes_sn",
    }
)


def craft_folder(folder: Path, numbers: bool, keep: frozenset[str] = frozenset()) -> Payloads:
    payload = Payloads(keep)
    for name in ("summary.json", "best_config.json", "retrain/seed-0/config.json"):
        path = folder / name
        path.write_text(
            json.dumps(crafted_json(json.loads(path.read_text()), payload, numbers, keys=name == "best_config.json"))
        )
    layer = payload("layer")
    craft_csv(folder / "trials.csv", payload, numbers)
    craft_csv(folder / "trial_metrics.csv", payload, numbers, {f"rate_{layer}": "0.2"})
    for table in ("retrain/metrics.csv", "retrain/seed-0/metrics.csv", "retrain/seed-1/metrics.csv"):
        craft_csv(folder / table, payload, numbers, {f"rate_{layer}": "0.1", f"test_spikes_{layer}": "12.5"})
    (folder / "pareto.csv").write_text(f"trial_id,last_test_acc\n{payload('pareto')},0.9\n")
    craft_study(folder, payload, numbers)
    craft_predictions(folder, payload, numbers)
    return payload


class PageParts(HTMLParser):
    """Every element and attribute of a page, each script's text, and the text a reader sees."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self.text = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text += data


def parts(page: str) -> PageParts:
    parser = PageParts()
    parser.feed(page)
    parser.close()
    return parser


VARIANTS = {  # (HTML in number fields too, the words left as they are)
    "names": (False, LAYOUT_WORDS),  # ids, names, choices: every figure still has its data
    "text-fields": (False, frozenset()),
    "text-and-number-fields": (True, frozenset()),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_html_in_every_field_of_every_file_comes_out_as_text(finished_experiment, variant):
    numbers, keep = VARIANTS[variant]
    payload = craft_folder(finished_experiment, numbers, keep)
    page = build_report(finished_experiment).read_text()
    found = assert_nothing_live(page, payload.all)
    figures = int(re.search(r'data-figure-count="(\d+)"', page).group(1))
    shown = [p for p in payload.all if p in found.text]  # as text in the header, the notes, the table
    assert "{{7*7}}" in found.text  # a template's syntax in a value is text too
    in_figures = [
        p
        for p in payload.all
        if json.dumps(p)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e").replace("/", "\\u002f") in page
    ]
    assert len(shown) >= 10 and len(in_figures) >= (10 if keep else 1)  # the payloads reached the page, both ways
    if keep:
        assert figures == len(SECTIONS)


def test_the_retrains_seeds_and_epochs_as_html_come_out_as_text(finished_experiment):
    """The fields the accuracy card once wrote unescaped."""
    summary = json.loads((finished_experiment / "summary.json").read_text())
    seed, epochs = f"<script>{MARK}</script>", f'<img src=x onerror="{MARK}">'
    summary["retrain"].update(seeds=[seed], epochs=epochs)
    (finished_experiment / "summary.json").write_text(json.dumps(summary))
    found = assert_nothing_live(build_report(finished_experiment).read_text(), [seed, epochs])
    assert "summary.json: retrain is {" in found.text  # the note that says why the block was not shown


def assert_nothing_live(page: str, payloads: list[str]) -> PageParts:
    """No element, attribute or script in ``page`` but the report's own; no payload anywhere raw."""
    found = parts(page)
    figures = int(re.search(r'data-figure-count="(\d+)"', page).group(1))
    assert {tag for tag, _ in found.tags} <= PAGE_TAGS
    assert not [(tag, name) for tag, attrs in found.tags for name, _ in attrs if name.startswith("on")]
    scripts = [attrs for tag, attrs in found.tags if tag == "script"]
    assert len(scripts) == 2 + figures  # plotly's config and library, then one per figure
    assert all(attrs in ([], [("type", "text/javascript")]) for attrs in scripts)  # inline, none with a src
    for script in found.scripts[2:]:  # each figure's: its JSON may hold the payloads, escaped
        assert not re.search(r"<script|</script|<!--|<img|<svg", script, re.IGNORECASE)
    for crafted in payloads:
        assert crafted not in page  # nowhere raw, in text, an attribute or a script
    assert "49p" not in page  # and never evaluated as a template
    return found
