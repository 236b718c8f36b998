"""``python -m vla_gym.merge <multirun dir> [--csv out.csv]``: one table for a sweep.

Finds every run directory below the given paths (any directory with ``episodes.jsonl``:
the numbered job dirs of a Hydra multirun) and prints success rates with Wilson 95%
intervals per policy x suite x perturbation/strength. A light sibling of ``vla_gym.report``
(no plots, no gallery, no matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from vla_gym.report.load import ReportInputError, all_episodes, load_runs
from vla_gym.report.tables import success_rows, to_csv, to_text
from vla_gym.results import atomic_write_text


def main(argv: Sequence[str] | None = None) -> int:
    """Print (and optionally save as CSV) the merged success table of several runs."""
    parser = argparse.ArgumentParser(prog="python -m vla_gym.merge", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run dirs or parents of run dirs (e.g. a multirun dir)")
    parser.add_argument("--csv", help="also write the table as CSV to this path")
    parser.add_argument("--by-task", action="store_true", help="one row per task instead of per suite")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.paths)
    except ReportInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = success_rows(all_episodes(runs), by_task=args.by_task)
    print(f"{len(runs)} runs")
    print(to_text(rows))
    if args.csv:
        atomic_write_text(args.csv, to_csv(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
