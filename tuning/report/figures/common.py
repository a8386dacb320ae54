"""What every figure shares: the experiment argument, colours, the layout, axis helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..folder import Experiment, read_experiment

SPLIT_COLOURS = {"train": "#1f77b4", "val": "#2ca02c", "test": "#ff7f0e"}
BEST_COLOUR = "#d62728"
TEMPLATE = "plotly_white"

ExperimentLike = Experiment | str | Path


def as_experiment(exp: ExperimentLike) -> Experiment:
    """An ``Experiment``, read from the folder when given a path."""
    return exp if isinstance(exp, Experiment) else read_experiment(exp)


def style(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left"),
        template=TEMPLATE,
        height=height,
        margin=dict(l=60, r=30, t=80, b=50),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
    )
    return fig


def metric_label(metric: str) -> str:
    split, _, kind = metric.partition("_")
    return f"{split} {'accuracy' if kind == 'acc' else kind}"


def trial_flags(exp: Experiment) -> dict[str, dict[str, bool]]:
    if exp.trials is None:
        return {}
    return {
        row.trial_id: {
            "stopped_early": bool(row.stopped_early),
            "silent": bool(row.silent),
            "seed_trial": bool(row.seed_trial),
            "failed": bool(row.diverged) or row.status == "ERROR",
        }
        for row in exp.trials.itertuples()
    }


def epoch_ticks(epochs: pd.Series) -> dict[str, Any]:
    """Whole-number epoch ticks (plotly would label 1.5 between epochs 1 and 2)."""
    return dict(tick0=1, dtick=1) if epochs.max() <= 20 else dict(tickformat="d")


def rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
