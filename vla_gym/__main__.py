"""``python -m vla_gym <command> ...``: the ``vla-gym`` console script without installing it."""

from vla_gym.cli import main

raise SystemExit(main())
