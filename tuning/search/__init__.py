"""The search: everything that needs Ray.

``python -m tuning.search fc|csnn`` (``cli``) reads a search space (``space``), checks the
resource request (``settings``), starts or joins Ray (``ray_cluster``), runs the Tuner with
Optuna's TPE and ASHA (``tuner``, ``searcher``), one trial per sampled configuration
(``trial``), writes the trial tables and summary (``results``), and retrains the best
configuration (``retrain``). What it writes is described in ``tuning.experiment``.
"""
