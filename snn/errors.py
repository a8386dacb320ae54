"""The one base class of every error that bad input raises, in the library and in the search.

Each command line catches ``SnnTuneError`` and prints its message as one line with exit code 2;
from Python, catch the specific class (``ConfigError``, ``DataError``, ``NetworkError``,
``tuning.search.SpaceError``, ...) or this base. The message is always one line that names what
is wrong, the rule and the value.
"""


class SnnTuneError(Exception):
    """Bad input: a flag, a config, a space file, data, a network factory, a checkpoint, a resource request."""
