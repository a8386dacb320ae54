"""The report's HTML: the header (facts, accuracy card, best configuration), one section per figure.

Everything here formats what ``tuning.report.folder`` read; no figure is drawn and no file
is read in this module.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from .. import experiment as files
from .figures.search import best_sampled, params_at_edge
from .folder import Experiment

# The seed report's best test accuracy, per model (README, "The networks").
SEED_TEST_ACC = {"fc": 0.9289, "csnn": 0.9933}
# Offline: no MathJax (plotly.js would look for it), no link to plotly's cloud, no logo link.
PLOTLY_CONFIG = {"typesetMath": False, "displaylogo": False, "responsive": True,
                 "showSendToCloud": False}


@dataclass(frozen=True)
class Section:
    """One figure of the report: its heading, what to look for in it, and how to draw it."""

    anchor: str
    heading: str
    caption: str
    draw: Callable[[Experiment], go.Figure]


def render_page(exp: Experiment, drawn: list[tuple[Section, go.Figure | None]],
                notes: list[tuple[Section, str]]) -> str:
    count = sum(fig is not None for _, fig in drawn)
    body = "\n".join(_figure_section(section, fig, dict(notes).get(section)) for section, fig in drawn)
    missing = exp.missing + [f"{section.heading}: {note}" for section, note in notes]
    return _PAGE.format(
        title=html.escape(f"snn-tune report: {exp.name}"),
        css=_CSS,
        plotlyjs=get_plotlyjs(),
        figure_count=count,
        missing_count=len(missing),
        header=_header(exp),
        missing=_missing_block(missing),
        body=body,
        footer=_footer(exp),
    )


# --- the header ---------------------------------------------------------------------------------


def _header(exp: Experiment) -> str:
    summary = exp.summary or {}
    model = exp.model
    rows = [
        ("Model", {"fc": "FC-SNN (fc)", "csnn": "CSNN (csnn)"}.get(model or "", model or "unknown")),
        ("Dataset", summary.get("dataset") or (exp.best_config or {}).get("dataset") or "unknown"),
        ("Metric tuned", _metric_meaning(exp.metric)),
        ("Search status", summary.get("status", "unknown (no summary.json)")),
        ("Trials", _trial_counts(exp)),
        ("Wall time", _duration(summary.get("wall_seconds"))),
        ("Best trial", _best_trial(exp)),
    ]
    if summary.get("budget"):
        rows.insert(5, ("Search budget", _budget(summary["budget"])))
    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{v if k == 'Metric tuned' else html.escape(str(v))}</td></tr>"
                      for k, v in rows)
    return f"""<section class="header">
<div class="facts"><table class="facts">{table}</table></div>
{_accuracy_card(exp)}
</section>
{_config_table(exp)}"""


def _metric_meaning(metric: str) -> str:
    if metric == "val_acc":
        return ("<b>val_acc</b>: validation images held out of the training set; the retrained test "
                "accuracy below is an unbiased estimate.")
    if metric == "test_acc":
        return ("<b>test_acc</b>: the test set, as the seed reports it; the configuration was chosen on the "
                "test images, so the retrained test accuracy below is optimistic.")
    return f"<b>{html.escape(metric)}</b>"


def _trial_counts(exp: Experiment) -> str:
    counts = (exp.summary or {}).get("trials")
    if not counts and exp.trials is not None:
        counts = files.trial_counts(exp.trials.to_dict("records"))
    if not counts:
        return "unknown (no summary.json or trials.csv)"
    text = (f"{counts.get('total', '?')} run: {counts.get('completed', '?')} ran all their epochs, "
            f"{counts.get('stopped_early', '?')} stopped early by ASHA")
    extra = [f"{counts[k]} {k}" for k in ("errored", "diverged", files.SILENT, "unfinished") if counts.get(k)]
    return text + (", " + ", ".join(extra) if extra else "")


def _budget(budget: dict[str, Any]) -> str:
    """summary.json's budget, when the search records one (it is not part of the folder's contract)."""
    parts = [f"{budget.get('trials', '?')} trials of up to {budget.get('epochs_per_trial', '?')} epochs"]
    if "grace_period" in budget:
        parts.append(f"ASHA grace period {budget['grace_period']}, reduction factor "
                     f"{budget.get('reduction_factor', '?')}")
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


def _accuracy_card(exp: Experiment) -> str:
    seed = SEED_TEST_ACC.get(exp.model or "")
    seed_line = (f'<p class="seed">Seed report ({exp.model}): <b>{seed:.2%}</b> best test accuracy</p>'
                 if seed else "")
    retrain = _retrain_accuracy(exp)
    if retrain is None:
        return (f'<div class="card"><h3>Retrained test accuracy</h3><p class="absent">No retrain yet: '
                f'the best configuration has not been trained for the full epochs.</p>{seed_line}</div>')
    n, epochs = len(retrain["seeds"]), retrain.get("epochs")
    spread = " ± " if n > 1 else ""

    def figure(kind: str) -> str:
        mean, std = retrain[f"{kind}_test_acc_mean"], retrain[f"{kind}_test_acc_std"]
        delta = f' <span class="delta">({(mean - seed) * 100:+.2f} pp vs seed)</span>' if seed else ""
        return f"<b>{_percent(mean)}</b>{spread + _points(std) if n > 1 else ''}{delta}"

    return f"""<div class="card"><h3>Retrained test accuracy</h3>
<p class="big">max over epochs: {figure("max")}</p>
<p class="big">final epoch: {figure("final")}</p>
<p>{'mean ± std over ' if n > 1 else ''}{n} seed(s) ({', '.join(map(str, retrain["seeds"]))}),
{epochs if epochs is not None else '?'} epochs each</p>
{seed_line}</div>"""


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


def _config_table(exp: Experiment) -> str:
    config = exp.best_config
    if not config:
        return '<section class="config"><h2>Best configuration</h2><p class="absent">Not known yet.</p></section>'
    space, fixed = exp.space, (exp.summary or {}).get("fixed") or {}
    edges, sampled = params_at_edge(exp), best_sampled(exp)
    rows = []
    for name, spec in space.items():
        flag = (f'<span class="edge">at the {edges[name]} edge of its range: widen it</span>'
                if name in edges else "")
        value = _value(config.get(name)) if name in sampled else f"not sampled ({_value(config.get(name))} unused)"
        rows.append(f"<tr class=\"searched{' at-edge' if name in edges else ''}\"><th>{html.escape(name)}</th>"
                    f"<td>{html.escape(value)}</td><td>searched: {html.escape(_range(spec))}</td>"
                    f"<td>{flag}</td></tr>")
    for name, value in fixed.items():
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{html.escape(_value(value))}</td>"
                    f"<td>fixed</td><td></td></tr>")
    others = {k: v for k, v in config.items() if k not in space and k not in fixed}
    rest = ", ".join(f"{k}={_value(v)}" for k, v in others.items())
    return f"""<section class="config"><h2>Best configuration</h2>
<table class="config"><tr><th>parameter</th><th>value</th><th>in the search</th><th></th></tr>
{''.join(rows)}</table>
<p class="rest">Other settings of the run: {html.escape(rest)}</p></section>"""


def _range(spec: dict[str, Any]) -> str:
    when = "; when " + ", ".join(f"{k} is {' or '.join(map(_value, v))}" for k, v in spec["when"].items()) \
        if spec.get("when") else ""
    if spec.get("type") == "categorical":
        return "one of " + ", ".join(_value(c) for c in spec.get("choices", [])) + when
    scale = ", log scale" if spec.get("log") else ""
    return f"{spec.get('type', '?')} in [{_value(spec.get('low'))}, {_value(spec.get('high'))}]{scale}{when}"


def _missing_block(missing: list[str]) -> str:
    if not missing:
        return ""
    items = "".join(f"<li>{html.escape(m)}</li>" for m in missing)
    return f'<section class="missing" id="missing"><h2>Missing or incomplete</h2><ul>{items}</ul></section>'


def _figure_section(section: Section, fig: go.Figure | None, note: str | None) -> str:
    head = f'<section class="figure" id="{section.anchor}"><h2>{html.escape(section.heading)}</h2>'
    if fig is None:
        return f'{head}<p class="absent">Not drawn: {html.escape(note or "no data")}</p></section>'
    div = pio.to_html(fig, include_plotlyjs=False, full_html=False, config=PLOTLY_CONFIG,
                      div_id=f"figure-{section.anchor}", default_height=f"{fig.layout.height or 450}px")
    return f'{head}<p class="caption">{html.escape(section.caption)}</p>{div}</section>'


def _footer(exp: Experiment) -> str:
    summary = exp.summary or {}
    versions = ", ".join(f"{k} {v}" for k, v in (summary.get("versions") or {}).items())
    commit = summary.get("git_commit")
    parts = [f"Built from {html.escape(str(exp.path))} by <code>python -m tuning.report</code>."]
    if commit:
        parts.append(f"git commit {html.escape(str(commit))}.")
    if versions:
        parts.append(f"Versions: {html.escape(versions)}.")
    return " ".join(parts)


def _percent(value: Any) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.2%}"


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

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{css}</style>
<script type="text/javascript">window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script type="text/javascript">{plotlyjs}</script>
</head>
<body>
<main id="report" data-figure-count="{figure_count}" data-missing-count="{missing_count}">
<h1>{title}</h1>
{header}
{missing}
{body}
<footer>{footer}</footer>
</main>
</body>
</html>
"""


