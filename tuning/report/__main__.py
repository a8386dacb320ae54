"""``python -m tuning.report results/<experiment>``: see ``tuning.report.build``."""

from .build import main

raise SystemExit(main())
