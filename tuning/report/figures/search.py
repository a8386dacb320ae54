"""The search as a whole: optimisation history, parallel coordinates, importance, each parameter's effect."""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..folder import Experiment, MissingData, searched_values
from .common import BEST_COLOUR, ExperimentLike, as_experiment, metric_label, rgba, style

EDGE_FRACTION = 0.05  # the best value is "at the edge" within this share of its range (log-aware)


def optimisation_history(exp: ExperimentLike) -> go.Figure:
    """Each trial's best metric in the order trials.csv lists them, and the best so far."""
    exp = as_experiment(exp)
    values = searched_values(exp).reset_index(drop=True)
    values["number"] = values.index + 1
    scored = values[values["result"].notna()]
    if scored.empty:
        raise MissingData(f"trials.csv has no trial with a best_{exp.metric} yet")
    fig = go.Figure()
    for label, rows, symbol, colour in (
        ("ran to the last epoch", scored[~scored["stopped_early"]], "circle", "#1f77b4"),
        ("stopped early by ASHA (truncated)", scored[scored["stopped_early"]], "x", "#9467bd"),
        ("best trial", scored[scored["trial_id"] == exp.best_trial_id], "star", BEST_COLOUR),
    ):
        if not rows.empty:
            fig.add_trace(
                go.Scatter(
                    x=rows["number"],
                    y=rows["result"],
                    mode="markers",
                    name=label,
                    marker=dict(symbol=symbol, size=14 if symbol == "star" else 9, color=colour),
                    text=rows["trial_id"],
                    hovertemplate="trial %{text}<br>%{y:.4f}",
                )
            )
    best_so_far = scored["result"].cummax()
    fig.add_trace(
        go.Scatter(
            x=scored["number"],
            y=best_so_far,
            mode="lines",
            name="best so far",
            line=dict(color=BEST_COLOUR, shape="hv"),
        )
    )
    failed = len(values) - len(scored)
    fig.update_xaxes(title_text="trial (in the order of trials.csv)")
    fig.update_yaxes(title_text=f"best {metric_label(exp.metric)} of the trial", tickformat=".1%")
    note = f"; {failed} trial(s) without a result (errored, diverged or not started)" if failed else ""
    return style(fig, f"Optimisation history: {len(scored)} trials{note}", 420)


def _scored_trials(exp: Experiment) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Trials with a result and their searched values, and the space of the parameters they show."""
    values = searched_values(exp)
    values = values[values["result"].notna()]
    space = {name: spec for name, spec in exp.space.items() if name in values.columns}
    if values.empty or not space:
        raise MissingData("trials.csv has no finished trial with its searched parameters")
    return values, space


def parallel_coordinates(exp: ExperimentLike) -> go.Figure:
    """All trials' searched hyperparameters, one axis each, lines coloured by the tuned metric."""
    exp = as_experiment(exp)
    values, space = _scored_trials(exp)
    dimensions = [_axis(name, spec, values[name]) for name, spec in space.items()]
    dimensions.append(dict(label=metric_label(exp.metric), values=values["result"], tickformat=".1%"))
    fig = go.Figure(
        go.Parcoords(
            line=dict(color=values["result"], colorscale="Viridis", showscale=False),
            dimensions=dimensions,
            labelangle=0,
            labelside="top",
        )
    )
    fig = style(
        fig,
        f"Hyperparameters of all {len(values)} scored trials, coloured by {exp.metric} (the last axis; yellow is best)",
        480,
    )
    fig.update_layout(margin=dict(t=120, l=70, r=70))
    return fig


NOT_SAMPLED = "not sampled"  # the tick of a conditional parameter's trials whose condition failed


def _axis(name: str, spec: dict[str, Any], column: pd.Series) -> dict[str, Any]:
    """One parallel-coordinates axis: categoricals as indices, log-scale numbers as log10. A conditional
    parameter's trials that did not sample it (a width of a layer that does not exist) sit at an extra tick,
    "not sampled", below the range."""
    absent = column.isna()
    if spec.get("type") == "categorical":
        choices = [str(c) for c in spec.get("choices") or sorted(column.dropna().astype(str).unique())]
        index = {c: i for i, c in enumerate(choices)}
        values = [-1 if gone else index.get(str(v), -1) for v, gone in zip(column, absent)]
        ticks, labels = list(range(len(choices))), choices
        if absent.any():
            ticks, labels = [-1, *ticks], [NOT_SAMPLED, *labels]
        return dict(
            label=name, values=values, tickvals=ticks, ticktext=labels, range=[min(ticks) - 0.3, len(choices) - 0.7]
        )
    low, high = float(spec.get("low", column.min())), float(spec.get("high", column.max()))
    log = spec.get("log") and low > 0
    lo, hi = (math.log10(low), math.log10(high)) if log else (low, high)
    whole = spec.get("type") == "int" and not log and high - low <= 10
    ticks = [float(v) for v in range(int(low), int(high) + 1)] if whole else list(np.linspace(lo, hi, 5))
    labels = [f"{10**t:.3g}" if log else f"{t:g}" for t in ticks]
    numbers = column.astype(float)
    values = np.log10(numbers) if log else numbers
    if absent.any():
        below = lo - 0.15 * (hi - lo or 1.0)
        values = values.where(~absent, below)
        ticks, labels, lo = [below, *ticks], [NOT_SAMPLED, *labels], below
    return dict(label=f"{name} (log)" if log else name, values=values, range=[lo, hi], tickvals=ticks, ticktext=labels)


@dataclass(frozen=True)
class Importances:
    """Each evaluator's importance per parameter, over the study's finished trials.

    A conditional parameter (a width of a layer that exists in some trials, tau of LIF neurons) is
    ranked by Optuna's conditional PED-ANOVA; fANOVA and mean decrease impurity rank only the
    parameters every finished trial sampled, so they leave it out (``conditional`` names them).
    """

    by_evaluator: dict[str, dict[str, float]]
    trials: int  # COMPLETE trials the evaluators saw
    not_run: list[str]  # "evaluator: why" for those that could not run
    conditional: list[str] = field(default_factory=list)  # parameters only some finished trials sampled


def importance_info(exp: ExperimentLike) -> Importances:
    """Optuna's importance evaluators over the search's own study (optuna.journal).

    Only the trials that ran to their last epoch are COMPLETE in the study (the search tells
    ASHA-stopped ones as pruned), and importance is computed over those. PED-ANOVA always
    runs; fANOVA and mean-decrease-impurity too when scikit-learn is installed.
    """
    exp = as_experiment(exp)
    study = exp.study()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        raise MissingData(
            f"parameter importance needs at least 2 trials that ran to their last epoch; the study has {len(complete)}"
        )
    results, failures = {}, []
    for label, evaluator in _importance_evaluators().items():
        try:
            with _quiet_optuna():
                results[label] = dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
        except Exception as e:  # too few trials for this evaluator, a parameter with one value
            failures.append(f"{label}: {type(e).__name__}: {e}")
    if not results:
        raise MissingData("no importance evaluator could run: " + "; ".join(failures))
    everywhere = set.intersection(*(set(t.params) for t in complete))
    conditional = sorted({p for t in complete for p in t.params} - everywhere)
    return Importances(results, len(complete), failures, conditional)


def param_importances(exp: ExperimentLike) -> go.Figure:
    """A bar per parameter and evaluator (``importance_info``), most important at the top."""
    info = importance_info(exp)
    first = next(iter(info.by_evaluator.values()))
    order = sorted({p for values in info.by_evaluator.values() for p in values}, key=lambda p: first.get(p, 0.0))
    fig = go.Figure()
    labels = [f"{p} (conditional)" if p in info.conditional else p for p in order]
    for label, importances in info.by_evaluator.items():  # None: not ranked by this evaluator (no bar, not 0)
        fig.add_trace(
            go.Bar(
                y=labels,
                x=[importances.get(p) for p in order],
                orientation="h",
                name=label,
                hovertemplate="%{y}: %{x:.3f}",
            )
        )
    fig.update_layout(barmode="group", showlegend=True)
    fig.update_xaxes(title_text="importance (sums to 1 per evaluator)", range=[0, 1])
    note = ", too few to rank reliably" if info.trials < 10 else ""
    skipped = f"; not run: {'; '.join(info.not_run)}" if info.not_run else ""
    if "fANOVA" not in info.by_evaluator and not info.not_run:
        skipped = " (fANOVA and mean decrease impurity need scikit-learn)"
    if info.conditional and len(info.by_evaluator) > 1:
        skipped += "; a conditional parameter is ranked by PED-ANOVA only"
    rows = len(order) * max(1, len(info.by_evaluator))
    return style(
        fig,
        f"Hyperparameter importance over the {info.trials} trials that ran to their last epoch{note}{skipped}",
        max(300, 90 + 40 * rows),
    )


def _importance_evaluators() -> dict[str, optuna.importance.BaseImportanceEvaluator]:
    evaluators: dict[str, optuna.importance.BaseImportanceEvaluator] = {
        "PED-ANOVA": optuna.importance.PedAnovaImportanceEvaluator()
    }
    try:
        import sklearn  # noqa: F401  (fANOVA and MDI fit scikit-learn random forests)
    except ImportError:
        return evaluators
    evaluators["fANOVA"] = optuna.importance.FanovaImportanceEvaluator(seed=0)
    evaluators["mean decrease impurity"] = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    return evaluators


@contextlib.contextmanager
def _quiet_optuna():
    """Optuna's log and warnings off (a sparse regime's warning is the title's "too few to rank reliably")."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(level)


def edge_of_range(value: Any, spec: dict[str, Any], fraction: float = EDGE_FRACTION) -> str | None:
    """ "low" or "high" when a numeric value lies within ``fraction`` of its range's end (log-aware)."""
    if spec.get("type") not in ("float", "int") or value is None or pd.isna(value):
        return None
    low, high, value = float(spec["low"]), float(spec["high"]), float(value)
    if spec.get("log") and low > 0 and value > 0:
        low, high, value = math.log(low), math.log(high), math.log(value)
    if high <= low:
        return None
    share = (value - low) / (high - low)
    return "low" if share <= fraction else "high" if share >= 1 - fraction else None


def params_at_edge(exp: ExperimentLike) -> dict[str, str]:
    """The searched parameters whose best value sits at an edge of its range: {name: "low"|"high"}."""
    exp = as_experiment(exp)
    best = best_sampled(exp)
    edges = {name: edge_of_range(best.get(name), case_spec(spec, best)) for name, spec in exp.space.items()}
    return {name: edge for name, edge in edges.items() if edge}


def case_spec(spec: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A ``by:`` parameter's range in the configuration ``values`` (its case's); any other parameter's own."""
    cases, other = spec.get("cases"), spec.get("by")
    if not isinstance(cases, dict) or other not in values:
        return spec
    value = values[other]
    found = cases.get(value if isinstance(value, str) else json.dumps(value))
    return found if isinstance(found, dict) else spec


def best_sampled(exp: Experiment) -> dict[str, Any]:
    """The values the best trial sampled: best_config's, without the parameters whose ``when:`` failed
    (the config holds a default for those, which the search never chose)."""
    best = exp.best_config or {}
    return {
        name: best[name]
        for name, spec in exp.space.items()
        if name in best and all(best.get(other) in allowed for other, allowed in (spec.get("when") or {}).items())
    }


def param_vs_result(exp: ExperimentLike) -> go.Figure:
    """One panel per searched parameter: each trial's value against its result; edges flagged."""
    exp = as_experiment(exp)
    values, space = _scored_trials(exp)
    edges = params_at_edge(exp)
    best_id, best = exp.best_trial_id, best_sampled(exp)
    cols = min(3, len(space))
    rows = math.ceil(len(space) / cols)
    titles = [f"{name}: best at the {edges[name]} edge, widen the range" if name in edges else name for name in space]
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=min(0.3, 0.4 / rows), horizontal_spacing=0.08
    )
    y_low, y_high = values["result"].min(), values["result"].max()
    pad = max(1e-3, 0.05 * (y_high - y_low))
    y_low, y_high = y_low - pad, y_high + pad
    for i, (name, spec) in enumerate(space.items()):
        row, col = divmod(i, cols)
        where = dict(row=row + 1, col=col + 1)
        numeric = spec.get("type") in ("float", "int")
        x = values[name] if numeric else values[name].astype(str)
        for label, mask, symbol in (
            ("ran to the last epoch", ~values["stopped_early"], "circle"),
            ("stopped early by ASHA", values["stopped_early"], "x"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=x[mask],
                    y=values["result"][mask],
                    mode="markers",
                    name=label,
                    legendgroup=label,
                    showlegend=i == 0,
                    text=values["trial_id"][mask],
                    marker=dict(symbol=symbol, size=8, color="#1f77b4" if symbol == "circle" else "#9467bd"),
                    hovertemplate=f"trial %{{text}}<br>{name} %{{x}}<br>%{{y:.4f}}<extra></extra>",
                ),
                **where,
            )
        if name in best:
            best_result = values.loc[values["trial_id"] == best_id, "result"]
            fig.add_trace(
                go.Scatter(
                    x=[best[name] if numeric else str(best[name])],
                    y=[best_result.iloc[0] if len(best_result) else y_high - pad],
                    mode="markers",
                    name="best trial",
                    legendgroup="best",
                    showlegend=i == 0,
                    marker=dict(symbol="star", size=16, color=BEST_COLOUR),
                ),
                **where,
            )
        if numeric:
            _draw_range(fig, name, case_spec(spec, best), edges.get(name), (y_low, y_high), where)
            fig.update_xaxes(**_numeric_axis(spec), **where)
        else:
            fig.update_xaxes(
                type="category", categoryorder="array", categoryarray=[str(c) for c in spec.get("choices", [])], **where
            )
        fig.update_yaxes(range=[y_low, y_high], tickformat=".1%", **where)
    for annotation in fig.layout.annotations:
        if "edge" in annotation.text:
            annotation.font = dict(color=BEST_COLOUR)
    return style(
        fig, f"Each searched hyperparameter against {exp.metric} (dashed: the range searched)", 60 + 300 * rows
    )


def _numeric_axis(spec: dict[str, Any]) -> dict[str, Any]:
    """A log axis labelled at powers of ten (at 1, 2, 5 times them within two decades), else a linear one."""
    low, high = float(spec["low"]), float(spec["high"])
    if not (spec.get("log") and low > 0):
        return dict(type="linear")
    steps = (1,) if math.log10(high / low) >= 2 else (1, 2, 5)
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for m in steps
        if low <= m * 10.0**e <= high
    ]
    return dict(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


def _draw_range(
    fig: go.Figure, name: str, spec: dict[str, Any], edge: str | None, y: tuple[float, float], where: dict[str, int]
) -> None:
    """Dashed lines at the range's ends and, at a flagged edge, a red band of EDGE_FRACTION of it."""
    low, high = float(spec["low"]), float(spec["high"])
    for bound in (low, high):
        fig.add_trace(
            go.Scatter(
                x=[bound, bound],
                y=list(y),
                mode="lines",
                showlegend=False,
                hoverinfo="skip",
                line=dict(color="#999", dash="dash", width=1),
            ),
            **where,
        )
    if edge is None:
        return
    log = spec.get("log") and low > 0

    def at(share: float) -> float:
        if log:
            return math.exp(math.log(low) + share * (math.log(high) - math.log(low)))
        return low + share * (high - low)

    a, b = (at(0.0), at(EDGE_FRACTION)) if edge == "low" else (at(1 - EDGE_FRACTION), at(1.0))
    fig.add_trace(
        go.Scatter(
            x=[a, b, b, a, a],
            y=[y[0], y[0], y[1], y[1], y[0]],
            fill="toself",
            mode="lines",
            line=dict(width=0),
            fillcolor=rgba(BEST_COLOUR, 0.15),
            showlegend=False,
            hoverinfo="skip",
            name=f"{name} edge",
        ),
        **where,
    )
