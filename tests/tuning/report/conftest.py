"""The report tests' fixtures: one finished experiment folder, and one of a search that stopped early."""

from tests.tuning.report.report_fixture import (  # noqa: F401  (fixtures, found by pytest here)
    _finished_experiment_template,
    finished_experiment,
    half_finished_experiment,
)
