"""The search: everything that needs Ray.

``tuning.search.run(space, model=..., data=...)`` (``api``) and ``python -m tuning.search`` (``cli``)
read a search space (``space``), check the resource request (``settings``), check the network on two
images (``inputs``), start or join Ray (``ray_cluster``), run the Tuner with Optuna's TPE and ASHA
(``tuner``, ``searcher``), one trial per sampled configuration (``trial``), write the trial tables
and summary (``results``), and retrain the best configuration (``retrain``). What it writes is
described in ``tuning.experiment``.
"""

from snn.errors import SnnTuneError

from .api import SearchInterrupted, SearchResult, read_result, run
from .settings import ClusterError, InputError, ResourceError
from .space import SpaceError

__all__ = [
    "ClusterError",
    "InputError",
    "ResourceError",
    "SearchInterrupted",
    "SearchResult",
    "SnnTuneError",
    "SpaceError",
    "read_result",
    "run",
]
