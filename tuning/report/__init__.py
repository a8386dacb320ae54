"""The report: reads an experiment folder, draws its figures, writes one self-contained HTML page.

``python -m tuning.report results/<experiment>`` (``build``); the folder is read by
``folder``, the figures are in ``figures`` (one function each), the page is formatted by
``page``. Nothing here imports Ray or torch or runs a model: what the report shows of the
retrained model, the retrain wrote into the folder.
"""

from .build import build_report

__all__ = ["build_report"]
