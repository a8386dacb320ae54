"""The report's figures, one function each, every one returning a plotly Figure.

Each takes an experiment folder (a path, or an ``Experiment`` from ``read_experiment``) and
reads only its result files, so a notebook can call them one by one::

    from tuning.report import figures
    figures.trial_curves("results/fc-search").show()

A figure whose input is absent raises ``MissingData`` with a line that says which file is
missing; the report shows that line in the figure's place. Where a figure's data is more
than a table column, a function beside it returns that data (``importance_info``,
``confusion_counts``, ``params_at_edge``), so tests and notebooks can check the numbers.
"""

from .curves import learning_curves, retrain_curves, trial_curves
from .model import confusion_counts, confusion_matrix, firing_rates, predictions, sample_predictions
from .search import (
    case_spec,
    edge_of_range,
    importance_info,
    optimisation_history,
    parallel_coordinates,
    param_importances,
    param_vs_result,
    params_at_edge,
)
from .spikes import cost_table, cost_table_info, front_networks, pareto, pareto_info, spikes_per_layer

__all__ = [
    "case_spec",
    "confusion_counts",
    "confusion_matrix",
    "edge_of_range",
    "firing_rates",
    "importance_info",
    "learning_curves",
    "optimisation_history",
    "parallel_coordinates",
    "param_importances",
    "param_vs_result",
    "params_at_edge",
    "predictions",
    "retrain_curves",
    "sample_predictions",
    "trial_curves",
    "cost_table",
    "cost_table_info",
    "front_networks",
    "pareto",
    "pareto_info",
    "spikes_per_layer",
]
