"""``python -m vla_gym.report``: see :mod:`vla_gym.report.cli`."""

from vla_gym.report.cli import main

raise SystemExit(main())
