"""Hyperparameter search for the ``snn`` networks, in two parts over one folder layout.

* ``tuning.search``: everything that needs Ray (``python -m tuning.search``).
* ``tuning.report``: the report, from result files alone (``python -m tuning.report``).
* ``tuning.experiment``: the experiment folder's file names, columns and derived counts, which
  both parts import (no Ray, no torch).
"""
