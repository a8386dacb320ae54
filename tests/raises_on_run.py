"""A module that raises when run (``python -m tests.raises_on_run``): tests/test_case_server.py's uncaught exception."""

raise LookupError("raised on purpose")
