"""``python -m vla_gym.merge <run dirs...> [--csv out.csv] [--out DIR]``: one table for a sweep or a sharded run.

Finds every run directory below the given paths (any directory with ``episodes.jsonl``:
the numbered job dirs of a Hydra multirun) and prints success rates with Wilson 95%
intervals per policy x suite x perturbation/strength. A light sibling of ``vla_gym.report``
(no plots, no gallery, no matplotlib).

``--out DIR`` merges the shards of one run (``shard=0/n`` .. ``shard=n-1/n``, same config
fingerprint) into one run directory: ``run.json``, ``episodes.jsonl`` (in plan order),
``results.json``, videos and trajectories -- the files one unsharded run writes. Shards of
different configs, or one episode recorded by two shards, are refused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from vla_gym.report.load import ReportInputError, all_episodes, discover_run_dirs, load_runs
from vla_gym.report.tables import success_rows, to_csv, to_text
from vla_gym.results import aggregate, atomic_write_json, atomic_write_text


class MergeError(ValueError):
    """Shards that cannot be merged into one run."""


def merge_shards(shard_dirs: Sequence[str | Path], out: str | Path) -> dict:
    """Merge the shard run dirs into ``out`` (a new or empty dir); returns the merged ``results.json``."""
    from vla_gym.run_store import EPISODES_FILE, RESULTS_FILE, RUN_FILE, dedupe, read_episodes, record_key

    dirs = [Path(d) for d in shard_dirs]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise MergeError(f"{out} is not empty; merge into a new directory")
    runs = []
    for d in dirs:
        try:
            run = json.loads((d / RUN_FILE).read_text())
        except (OSError, ValueError) as e:
            raise MergeError(f"{d / RUN_FILE}: {type(e).__name__}: {e}") from None
        runs.append(run)
    prints = {r.get("config_fingerprint") for r in runs}
    if len(prints) != 1:
        raise MergeError(f"the shards have different config fingerprints ({sorted(map(str, prints))}): not one run")
    records, seen = [], {}
    for d in dirs:
        recs, _ = dedupe(read_episodes(d / EPISODES_FILE))
        for r in recs:
            k = record_key(r)
            if k in seen:
                raise MergeError(f"episode {k} is recorded in both {seen[k]} and {d}: overlapping shards")
            seen[k] = d
            records.append(r)
    records.sort(key=lambda r: (r.suite, r.task_index, r.episode_index, str(record_key(r))))
    out.mkdir(parents=True, exist_ok=True)
    first = runs[0]
    atomic_write_json(out / RUN_FILE, {**first, "merged_from": [str(d) for d in dirs]})
    atomic_write_text(out / EPISODES_FILE, "".join(json.dumps(asdict(r)) + "\n" for r in records))
    for d in dirs:
        for sub in ("videos", "trajectories"):
            if (d / sub).is_dir():
                shutil.copytree(d / sub, out / sub, dirs_exist_ok=True)
    try:
        meta = json.loads((dirs[0] / RESULTS_FILE).read_text()).get("meta", {})
    except (OSError, ValueError):
        meta = {}
    meta = {**meta, "shard": None, "merged_shards": [m.get("shard") for m in _metas(dirs)]}
    results = aggregate(records, meta)
    atomic_write_json(out / RESULTS_FILE, results)
    return results


def _metas(dirs: list[Path]) -> list[dict]:
    out = []
    for d in dirs:
        try:
            out.append(json.loads((d / "results.json").read_text()).get("meta", {}))
        except (OSError, ValueError):
            out.append({})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print (and optionally save as CSV) the merged success table of several runs; ``--out`` merges shards."""
    parser = argparse.ArgumentParser(prog="python -m vla_gym.merge", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run dirs or parents of run dirs (e.g. a multirun dir)")
    parser.add_argument("--csv", help="also write the table as CSV to this path")
    parser.add_argument("--by-task", action="store_true", help="one row per task instead of per suite")
    parser.add_argument("--out", help="merge the shard run dirs found into this new run dir")
    args = parser.parse_args(argv)
    if args.out:
        try:
            merge_shards(discover_run_dirs(args.paths), args.out)
        except (MergeError, ReportInputError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.paths = [args.out]
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
