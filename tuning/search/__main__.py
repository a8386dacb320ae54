"""``python -m tuning.search fc|csnn [flags]``: see ``tuning.search.cli``."""

from .cli import main

raise SystemExit(main())
