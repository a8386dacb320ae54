"""The report's HTML: the header (facts, accuracy card, best configuration), one section per figure.

Everything here formats what ``tuning.report.folder`` read; no figure is drawn and no file
is read in this module. The page is one Jinja2 template with autoescaping on: the Python side
hands it plain values (text and numbers, never HTML), and the template escapes every one of
them, so no field of a result file, present or future, can put markup in the page. The only
markup that is not escaped is this module's own (the template, the CSS) and plotly's: its
library and each figure's ``<div>`` with the figure as JSON, in which plotly escapes ``<``,
``>`` and ``/`` (``tests/tuning/report/test_report_escaping.py`` puts HTML into every field).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2
import plotly.graph_objects as go
import plotly.io as pio
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from .. import experiment as files
from .figures.search import best_sampled, params_at_edge
from .folder import Experiment

# The seed report's best test accuracy, per model, and what it took: full MNIST (docs/networks.md).
SEED_REPORT = {"fc": (0.9289, "100 epochs on full MNIST"), "csnn": (0.9933, "64 epochs on full MNIST")}
# Offline: no MathJax (plotly.js would look for it), no link to plotly's cloud, no logo link.
PLOTLY_CONFIG = {"typesetMath": False, "displaylogo": False, "responsive": True, "showSendToCloud": False}


@dataclass(frozen=True)
class Section:
    """One figure of the report: its heading, what to look for in it, and how to draw it."""

    anchor: str
    heading: str
    caption: str
    draw: Callable[[Experiment], go.Figure]


def render_page(
    exp: Experiment, drawn: list[tuple[Section, go.Figure | None]], notes: list[tuple[Section, str]]
) -> str:
    """The page's HTML: the header's parts and each figure (or the note that stands in its place)."""
    broken: list[str] = []
    header = {
        part: _guarded(build, exp, broken, heading)
        for part, heading, build in (
            ("facts", "the facts", _facts),
            ("card", "the accuracy card", _card),
            ("config", "the best configuration", _config),
        )
    }
    noted = dict(notes)
    sections = [
        {
            "anchor": s.anchor,
            "heading": s.heading,
            "caption": s.caption,
            "note": noted.get(s),
            "figure": None if fig is None else _figure_html(s, fig),
        }
        for s, fig in drawn
    ]
    missing = exp.missing + [f"{section.heading}: {note}" for section, note in notes] + broken
    return _PAGE.render(
        title=f"snn-tune report: {exp.name}",
        css=Markup(_CSS),
        plotlyjs=Markup(get_plotlyjs()),
        figure_count=sum(fig is not None for _, fig in drawn),
        missing=missing,
        sections=sections,
        footer=_footer(exp),
        **header,
    )


def _guarded(build: Callable[[Experiment], Any], exp: Experiment, broken: list[str], what: str) -> Any:
    """``build(exp)``, or None with a note in ``broken``: a value the checks let through must not cost the page."""
    try:
        return build(exp)
    except Exception as e:
        print(f"tuning.report: warning: {what}: {type(e).__name__}: {e}", file=sys.stderr)
        broken.append(f"{what} could not be shown ({type(e).__name__}: {e})")
        return None


def _figure_html(section: Section, fig: go.Figure) -> Markup:
    """plotly's ``<div>`` and ``<script>`` for one figure: the figure's strings are JSON that plotly escapes."""
    return Markup(
        pio.to_html(
            fig,
            include_plotlyjs=False,
            full_html=False,
            config=PLOTLY_CONFIG,
            div_id=f"figure-{section.anchor}",
            default_height=f"{fig.layout.height or 450}px",
        )
    )


# --- the header ---------------------------------------------------------------------------------


def _facts(exp: Experiment) -> list[tuple[str, Any]]:
    """(label, value) rows; the value of "Metric tuned" is the metric's name (the template explains it)."""
    summary = exp.summary or {}
    model = exp.model
    rows = [
        ("Model", {"fc": "FC-SNN (fc)", "csnn": "CSNN (csnn)"}.get(model or "", model or "unknown")),
        ("Dataset", summary.get("dataset") or (exp.best_config or {}).get("dataset") or "unknown"),
        ("Metric tuned", exp.metric),
        ("Search status", summary.get("status", "unknown (no summary.json)")),
        ("Trials", _trial_counts(exp)),
        ("Wall time", _duration(summary.get("wall_seconds"))),
        ("Best trial", _best_trial(exp)),
    ]
    if summary.get("budget"):
        rows.insert(5, ("Search budget", _budget(summary["budget"])))
    return rows


def _trial_counts(exp: Experiment) -> str:
    counts = (exp.summary or {}).get("trials")
    if not counts and exp.trials is not None:
        counts = files.trial_counts(exp.trials.to_dict("records"))
    if not counts:
        return "unknown (no summary.json or trials.csv)"
    text = (
        f"{counts.get('total', '?')} run: {counts.get('completed', '?')} ran all their epochs, "
        f"{counts.get('stopped_early', '?')} stopped early by ASHA"
    )
    extra = [f"{counts[k]} {k}" for k in ("errored", "diverged", files.SILENT, "unfinished") if counts.get(k)]
    return text + (", " + ", ".join(extra) if extra else "")


def _budget(budget: dict[str, Any]) -> str:
    """summary.json's budget, when the search records one (it is not part of the folder's contract)."""
    parts = [f"{budget.get('trials', '?')} trials of up to {budget.get('epochs_per_trial', '?')} epochs"]
    if "grace_period" in budget:
        parts.append(
            f"ASHA grace period {budget['grace_period']}, reduction factor {budget.get('reduction_factor', '?')}"
        )
    if "retrain_epochs" in budget:
        parts.append(f"retrain {budget['retrain_epochs']} epochs")
    return "; ".join(parts)


def _best_trial(exp: Experiment) -> str:
    best = (exp.summary or {}).get("best_trial") or {}
    trial_id = exp.best_trial_id
    if trial_id is None:
        return "none yet"
    value = best.get("metric_value")
    if value is None and exp.trials is not None and f"best_{exp.metric}" in exp.trials.columns:
        value = exp.trials.loc[exp.trials["trial_id"] == trial_id, f"best_{exp.metric}"].max()
    return f"{trial_id}: {exp.metric} {_percent(value)}"


def _card(exp: Experiment) -> dict[str, Any]:
    """The accuracy card's figures, as text: the retrain's (max and final, mean ± std), the best trial against the
    seed configuration's trial of the same search (the same budget), and the seed report's figure with its budget."""
    report = SEED_REPORT.get(exp.model or "") if (exp.summary or {}).get("dataset", "mnist") == "mnist" else None
    card: dict[str, Any] = {
        "model": exp.model,
        "retrain": None,
        "versus": _versus_seed_trial(exp),
        "seed": None if report is None else f"{report[0]:.2%}",
        "seed_budget": None if report is None else report[1],
    }
    retrain = _retrain_accuracy(exp)
    if retrain is None:
        return card
    n = len(retrain["seeds"])

    def figure(kind: str) -> dict[str, str | None]:
        mean, std = retrain.get(f"{kind}_test_acc_mean"), retrain.get(f"{kind}_test_acc_std")
        return {"mean": _percent(mean), "std": _points(std) if n > 1 and std is not None else None, "delta": None}

    card["retrain"] = {
        "max": figure("max"),
        "final": figure("final"),
        "n": n,
        "seeds": ", ".join(map(str, retrain["seeds"])),
        "epochs": "?" if retrain.get("epochs") is None else str(retrain["epochs"]),
    }
    return card


def _versus_seed_trial(exp: Experiment) -> str | None:
    """The best trial's metric against the seed configuration's trial (trial 0) of the same search."""
    summary = exp.summary or {}
    seed, best = summary.get("seed_trial"), summary.get("best_trial")
    if not (isinstance(seed, dict) and isinstance(best, dict)):
        return None
    ours, theirs = best.get("metric_value"), seed.get("metric_value")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (ours, theirs)):
        return None
    who = "the seed's configuration" if exp.model in SEED_REPORT else "the factory's defaults"
    if best.get("trial_id") == seed.get("trial_id"):
        return f"The best trial is {who} (trial 0): {exp.metric} {_percent(ours)}."
    return (
        f"Best trial {exp.metric} {_percent(ours)} against {_percent(theirs)} for {who} (trial 0) with the same "
        f"trial budget: {(ours - theirs) * 100:+.2f} pp."
    )


def _retrain_accuracy(exp: Experiment) -> dict[str, Any] | None:
    """summary.json's retrain block, else the same figures computed from retrain/metrics.csv."""
    retrain = (exp.summary or {}).get("retrain")
    if retrain and retrain.get("max_test_acc_mean") is not None:
        return retrain
    table = exp.retrain_metrics
    if table is None or "test_acc" not in table.columns or table.empty:
        return None
    histories = {int(seed): rows.sort_values(files.EPOCH).to_dict("records") for seed, rows in table.groupby("seed")}
    return files.retrain_summary(histories, int(table[files.EPOCH].max()), checkpoint="")


def _config(exp: Experiment) -> dict[str, Any] | None:
    """The best configuration's rows: each searched parameter (its value, range, an edge flag), each fixed one."""
    config = exp.best_config
    if not config:
        return None
    space, fixed = exp.space, (exp.summary or {}).get("fixed") or {}
    edges, sampled = params_at_edge(exp), best_sampled(exp)
    rows = []
    for name, spec in space.items():
        value = _value(config.get(name)) if name in sampled else f"not sampled ({_value(config.get(name))} unused)"
        rows.append({"name": name, "value": value, "search": f"searched: {_range(spec)}", "edge": edges.get(name)})
    for name, value in fixed.items():
        rows.append({"name": name, "value": _value(value), "search": "fixed", "edge": None})
    others = {k: v for k, v in config.items() if k not in space and k not in fixed}
    return {
        "rows": rows,
        "rest": ", ".join(f"{k}={_value(v)}" for k, v in others.items()),
        "network": _best_network(exp),
    }


def _best_network(exp: Experiment) -> str | None:
    """The best trial's network in words (summary.json's, else trials.csv's network column)."""
    network = ((exp.summary or {}).get("best_trial") or {}).get("network")
    if isinstance(network, str) and network:
        return network
    trials, best = exp.trials, exp.best_trial_id
    if trials is None or best is None or files.NETWORK not in trials.columns:
        return None
    found = trials.loc[trials["trial_id"] == best, files.NETWORK].dropna()
    return str(found.iloc[0]) if len(found) else None


def _range(spec: dict[str, Any]) -> str:
    cases = spec.get("cases")
    if isinstance(cases, dict) and cases:
        return f"by {spec.get('by')}: " + "; ".join(f"{key}: {_range(case)}" for key, case in cases.items())
    when = (
        "; when " + ", ".join(f"{k} is {' or '.join(map(_value, v))}" for k, v in spec["when"].items())
        if spec.get("when")
        else ""
    )
    if spec.get("type") == "categorical":
        return "one of " + ", ".join(_value(c) for c in spec.get("choices", [])) + when
    scale = ", log scale" if spec.get("log") else ""
    return f"{spec.get('type', '?')} in [{_value(spec.get('low'))}, {_value(spec.get('high'))}]{scale}{when}"


def _footer(exp: Experiment) -> dict[str, str | None]:
    summary = exp.summary or {}
    return {
        "path": str(exp.path),
        "commit": summary.get("git_commit"),
        "versions": ", ".join(f"{k} {v}" for k, v in (summary.get("versions") or {}).items()) or None,
    }


def _percent(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "?"
    return "?" if math.isnan(number) else f"{number:.2%}"


def _points(value: float) -> str:
    return f"{value * 100:.2f} pp"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(round(float(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #222; background: #f6f7f9; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 40px; }
h1 { font-size: 1.6em; margin: 8px 0 16px; }
h2 { font-size: 1.2em; margin: 0 0 6px; }
section { background: #fff; border: 1px solid #e3e5e8; border-radius: 6px; padding: 14px 18px; margin: 0 0 16px; }
section.header { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
.facts { flex: 3 1 520px; }
table.facts th { text-align: left; padding: 3px 14px 3px 0; vertical-align: top; white-space: nowrap; color: #555; }
table.facts td { padding: 3px 0; }
.card { flex: 1 1 280px; border-left: 4px solid #1f77b4; padding: 0 0 0 16px; }
.card h3 { margin: 0 0 8px; font-size: 1.05em; }
.card p { margin: 4px 0; }
.card .big { font-size: 1.15em; }
.delta { color: #555; font-size: 0.85em; }
.seed { color: #555; border-top: 1px solid #eee; padding-top: 6px; }
.versus { color: #333; }
.network { margin: 0 0 8px; }
table.config { border-collapse: collapse; }
table.config th, table.config td { text-align: left; padding: 3px 14px 3px 0; border-bottom: 1px solid #f0f0f0; }
tr.at-edge td, .edge { color: #c62828; font-weight: 600; }
.rest { color: #666; font-size: 0.9em; }
.caption { color: #555; margin: 0 0 4px; }
.absent { color: #8a6d00; background: #fff8e1; padding: 6px 10px; border-radius: 4px; }
section.missing { border-color: #f0c36d; background: #fffbf0; }
section.missing li { margin: 2px 0; }
footer { color: #777; font-size: 0.85em; }
"""

# Every {{ value }} below is escaped (autoescape); none of the values is HTML.
_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>{{ css }}</style>
<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>
<script type="text/javascript">{{ plotlyjs }}</script>
</head>
<body>
<main id="report" data-figure-count="{{ figure_count }}" data-missing-count="{{ missing | length }}">
<h1>{{ title }}</h1>
<section class="header">
<div class="facts"><table class="facts">
{%- for label, value in facts or [] %}
<tr><th>{{ label }}</th><td>{% if label == "Metric tuned" %}{{ metric_meaning(value) }}{% else %}{{ value }}{% endif %}</td></tr>
{%- endfor %}
</table></div>
{% if card %}<div class="card"><h3>Retrained test accuracy</h3>
{%- if card.retrain %}
{%- for kind in ("max", "final") %}{% set f = card.retrain[kind] %}
<p class="big">{{ "max over epochs" if kind == "max" else "final epoch" }}: <b>{{ f.mean }}</b>
{%- if f.std %} ± {{ f.std }}{% endif %}{% if f.delta %} <span class="delta">({{ f.delta }})</span>{% endif %}</p>
{%- endfor %}
<p>{% if card.retrain.n > 1 %}mean ± std over {% endif %}{{ card.retrain.n }} seed(s) ({{ card.retrain.seeds }}),
{{ card.retrain.epochs }} epochs each</p>
{%- else %}
<p class="absent">No retrain yet: the best configuration has not been trained for the full epochs.</p>
{%- endif %}
{%- if card.versus %}
<p class="versus">{{ card.versus }}</p>
{%- endif %}
{%- if card.seed %}
<p class="seed">For reference, the seed report's {{ card.model }}: <b>{{ card.seed }}</b> best test accuracy after
{{ card.seed_budget }}.</p>
{%- endif %}</div>{% endif %}
</section>
<section class="config"><h2>Best configuration</h2>
{%- if config %}
{%- if config.network %}<p class="network">Network: <b>{{ config.network }}</b></p>{% endif %}
<table class="config"><tr><th>parameter</th><th>value</th><th>in the search</th><th></th></tr>
{%- for row in config.rows %}
<tr{% if row.search != "fixed" %} class="searched{% if row.edge %} at-edge{% endif %}"{% endif %}><th>{{ row.name }}</th><td>{{ row.value }}</td><td>{{ row.search }}</td><td>
{%- if row.edge %}<span class="edge">at the {{ row.edge }} edge of its range: widen it</span>{% endif %}</td></tr>
{%- endfor %}
</table>
<p class="rest">Other settings of the run: {{ config.rest }}</p>
{%- else %}
<p class="absent">Not known yet.</p>
{%- endif %}</section>
{% if missing %}<section class="missing" id="missing"><h2>Missing or incomplete</h2><ul>
{%- for item in missing %}<li>{{ item }}</li>{% endfor %}</ul></section>{% endif %}
{% for s in sections %}
<section class="figure" id="{{ s.anchor }}"><h2>{{ s.heading }}</h2>
{%- if s.figure %}<p class="caption">{{ s.caption }}</p>{{ s.figure }}
{%- else %}<p class="absent">Not drawn: {{ s.note or "no data" }}</p>{% endif %}</section>
{%- endfor %}
<footer>Built from {{ footer.path }} by <code>python -m tuning.report</code>.
{%- if footer.commit %} git commit {{ footer.commit }}.{% endif %}
{%- if footer.versions %} Versions: {{ footer.versions }}.{% endif %}</footer>
</main>
</body>
</html>
"""


def metric_meaning(metric: str) -> Markup:
    """What choosing on the tuned metric means for the test figure; the metric's name is escaped."""
    if metric == "val_acc":
        return Markup(
            "<b>val_acc</b>: validation images held out of the training set; the retrained test "
            "accuracy below is an unbiased estimate."
        )
    if metric == "test_acc":
        return Markup(
            "<b>test_acc</b>: the test set, as the seed reports it; the configuration was chosen on the "
            "test images, so the retrained test accuracy below is optimistic."
        )
    return Markup("<b>{}</b>").format(metric)  # Markup.format escapes its arguments


_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_ENVIRONMENT.globals["metric_meaning"] = metric_meaning
_PAGE = _ENVIRONMENT.from_string(_TEMPLATE)
