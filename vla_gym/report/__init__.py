"""Turn rollout run directories into tables, plots, a video gallery and sim↔real metrics.

Entry point: ``python -m vla_gym.report <run dirs...> [--out DIR] [--real real.csv]``.
The modules each do one job: :mod:`.load` finds and reads runs, :mod:`.tables` computes success
rates with Wilson intervals, :mod:`.plots` draws PNGs, :mod:`.sim_real` compares with real-robot
rates, :mod:`.markdown` and :mod:`.gallery` write ``report.md`` and ``index.html``.
"""

from vla_gym.report.cli import main

__all__ = ["main"]
