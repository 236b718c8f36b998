"""``python -m vla_gym.merge <run dirs...> [--csv out.csv] [--out DIR]``: one table for a sweep or a sharded run.

Finds every run directory below the given paths (any directory with ``episodes.jsonl``:
the numbered job dirs of a Hydra multirun) and prints success rates with Wilson 95%
intervals per policy x suite x perturbation/strength. A light sibling of ``vla_gym.report``
(no plots, no gallery, no matplotlib).

``--out DIR`` merges the shards of one run (``shard=0/n`` .. ``shard=n-1/n``, same config
fingerprint) into one run directory: ``run.json``, ``episodes.jsonl`` (in plan order),
``results.json``, videos and trajectories -- the files one unsharded run writes. Shards of
different configs, or one episode recorded by two shards, are refused; so are missing or
unfinished shards unless ``--allow-partial`` (the merged run is then marked ``partial``).
Without ``--out`` every episode is counted once (:mod:`vla_gym.run_reader`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from vla_gym.records import EPISODES_FILE, RESULTS_FILE, RUN_FILE, RecordConflict, record_key
from vla_gym.report.load import ReportInputError, all_episodes, discover_run_dirs, load_runs
from vla_gym.report.tables import success_rows, to_csv, to_text
from vla_gym.results import aggregate, atomic_write_json, atomic_write_text
from vla_gym.run_reader import read_runs, without_merged_sources


class MergeError(ValueError):
    """Shards that cannot be merged into one run."""


def _shard_of(d: Path, meta: dict) -> tuple[int, int] | None:
    spec = meta.get("shard")
    if spec is None:
        return None
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise MergeError(f"{d / RESULTS_FILE}: meta.shard {spec!r} is not \"i/n\"") from None
    return i, n


def merge_shards(shard_dirs: Sequence[str | Path], out: str | Path, *, allow_partial: bool = False) -> dict:
    """Merge the shard run dirs into ``out`` (a new or empty dir); returns the merged ``results.json``.

    All shards ``0/n`` .. ``n-1/n`` must be there, each holding every episode it planned, unless
    ``allow_partial`` (then ``run.json`` and ``results.json``'s meta say ``partial: true`` and what is
    missing). A shard run twice (a re-submitted job) counts once; two different shards holding one
    episode, or one episode with two outcomes, are refused.
    """
    dirs = [Path(d).resolve() for d in shard_dirs]
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
    metas = _metas(dirs)
    shards = [_shard_of(d, m) for d, m in zip(dirs, metas)]
    counts = {s[1] for s in shards if s is not None}
    if len(counts) > 1 or (counts and None in shards):
        raise MergeError("the dirs mix " + ("different shard counts " + str(sorted(counts)) if len(counts) > 1
                                            else "shards and an unsharded run") + ": not the shards of one run")
    sharded = bool(counts)
    n = counts.pop() if counts else 1
    groups: dict[int, list[Path]] = {}
    for d, s in zip(dirs, shards):
        groups.setdefault(0 if s is None else s[0], []).append(d)
    try:
        by_shard = {i: [r for _, rs in read_runs(ds) for r in rs] for i, ds in groups.items()}
    except RecordConflict as e:
        raise MergeError(str(e)) from None
    records, seen = [], {}
    for i, recs in by_shard.items():
        for r in recs:
            k = record_key(r)
            if k in seen:
                raise MergeError(f"episode {k} is recorded in both {groups[seen[k]][0]} and {groups[i][0]}: "
                                 "overlapping shards")
            seen[k] = i
            records.append(r)
    missing = [f"{i}/{n}" for i in range(n) if i not in groups] if sharded else []
    planned = {i: max((int(m.get("planned_episodes") or 0) for d, m in zip(dirs, metas) if d in groups[i]),
                      default=0) for i in groups}
    incomplete = [f"{i}/{n} ({groups[i][0]}: {len(by_shard[i])} of {planned[i]} planned episodes)"
                  for i in sorted(groups) if len(by_shard[i]) < planned[i]]
    if (missing or incomplete) and not allow_partial:
        what = "; ".join(filter(None, [f"missing shard(s) {', '.join(missing)}" if missing else "",
                                       f"unfinished shard(s) {', '.join(incomplete)}" if incomplete else ""]))
        raise MergeError(f"not every episode of the run is there: {what}. Run (or resume) those shards, or pass "
                         "--allow-partial to merge what there is (marked partial)")
    partial = {"partial": True, "missing_shards": missing, "unfinished_shards": incomplete} \
        if missing or incomplete else {}
    records.sort(key=lambda r: (r.suite, r.task_index, r.episode_index, str(record_key(r))))
    out.mkdir(parents=True, exist_ok=True)
    first = runs[0]
    atomic_write_json(out / RUN_FILE, {**first, "merged_from": [str(d) for d in dirs], **partial})
    atomic_write_text(out / EPISODES_FILE, "".join(json.dumps(asdict(r)) + "\n" for r in records))
    for d in dirs:
        for sub in ("videos", "trajectories"):
            if (d / sub).is_dir():
                shutil.copytree(d / sub, out / sub, dirs_exist_ok=True)
    meta = {**metas[0], "shard": None, "merged_shards": [m.get("shard") for m in metas],
            "planned_episodes": sum(planned.values()) or None, **partial}
    results = aggregate(records, meta)
    atomic_write_json(out / RESULTS_FILE, results)
    return results


def _metas(dirs: list[Path]) -> list[dict]:
    out = []
    for d in dirs:
        try:
            meta = json.loads((d / RESULTS_FILE).read_text()).get("meta", {})
        except (OSError, ValueError, AttributeError):
            meta = {}
        out.append(meta if isinstance(meta, dict) else {})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print (and optionally save as CSV) the merged success table of several runs; ``--out`` merges shards."""
    parser = argparse.ArgumentParser(prog="python -m vla_gym.merge", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run dirs or parents of run dirs (e.g. a multirun dir)")
    parser.add_argument("--csv", help="also write the table as CSV to this path")
    parser.add_argument("--by-task", action="store_true", help="one row per task instead of per suite")
    parser.add_argument("--out", help="merge the shard run dirs found into this new run dir")
    parser.add_argument("--allow-partial", action="store_true",
                        help="with --out: merge even if shards are missing or unfinished (marked partial)")
    args = parser.parse_args(argv)
    if args.out:
        try:
            merge_shards(without_merged_sources(discover_run_dirs(args.paths)), args.out,
                         allow_partial=args.allow_partial)
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
