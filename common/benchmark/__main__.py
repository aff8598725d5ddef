"""``python -m common.benchmark``: the efficiency table of the four methods (see :mod:`common.benchmark.efficiency`)."""

from .efficiency import main

raise SystemExit(main())
