"""Reading the records of many run directories at once, each episode counted once.

What the report, ``vla_gym.merge`` (with and without ``--out``) and any other reader of several
run dirs go through, so a sweep is never counted wrong:

- a merged dir (``run.json`` ``merged_from``) replaces its source dirs when both are found (the
  README's ``merge --out <sweep>/merged <sweep>`` then ``report <sweep>``);
- within one config (``run.json``'s ``config_fingerprint``: shards and re-submitted jobs share it)
  an episode key is counted once, by :func:`vla_gym.records.dedupe`'s rule, within a file and
  across dirs; runs of different configs never de-duplicate against each other;
- the same key with different outcomes is a :class:`~vla_gym.records.RecordConflict` naming both
  ``file:line`` places.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from vla_gym.records import EPISODES_FILE, RUN_FILE, EpisodeRecord, RecordConflict, dedupe, read_numbered, record_key


def read_run_file(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run dir, or ``{}`` when absent or unreadable."""
    try:
        data = json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def without_merged_sources(dirs: Iterable[Path]) -> list[Path]:
    """``dirs`` less every dir that a merged dir among them was made from (that one holds its episodes)."""
    dirs = [Path(d).resolve() for d in dirs]
    covered: dict[Path, Path] = {}
    for d in dirs:
        for src in read_run_file(d).get("merged_from") or []:
            covered[Path(str(src)).resolve()] = d
    dropped = [d for d in dirs if d in covered and covered[d] != d]
    for merged in dict.fromkeys(covered[d] for d in dropped):
        n = sum(covered[d] == merged for d in dropped)
        print(f"note: counting {merged} instead of the {n} shard dir(s) it was merged from", file=sys.stderr)
    return [d for d in dirs if d not in dropped]


def read_runs(dirs: Iterable[str | os.PathLike]) -> list[tuple[Path, list[EpisodeRecord]]]:
    """Each run dir with its records, de-duplicated within and across dirs of one config.

    Raises:
        RecordConflict: one episode recorded with different outcomes (the message names both places).
    """
    dirs = without_merged_sources(Path(d) for d in dirs)
    kept: dict[tuple[str, Any], tuple[int, int, EpisodeRecord, str]] = {}  # (config, key) -> (dir i, order, rec, place)
    dropped: dict[Path, int] = {}
    order = 0
    for i, d in enumerate(dirs):
        path = d / EPISODES_FILE
        numbered = read_numbered(path)
        recs, n = dedupe([r for _, r in numbered], [f"{path}:{line}" for line, _ in numbered])
        if n:
            dropped[path] = dropped.get(path, 0) + n
        config = str(read_run_file(d).get("config_fingerprint") or f"dir:{d}")
        lines = {id(r): line for line, r in numbered}
        for r in recs:
            k = (config, record_key(r))
            place = f"{path}:{lines.get(id(r), '?')}"
            if k not in kept:
                kept[k] = (i, order, r, place)
                order += 1
                continue
            j, o, old, old_place = kept[k]
            dropped[path] = dropped.get(path, 0) + 1
            if old.error is None and r.error is None and old.success != r.success:
                raise RecordConflict(f"episode {r.episode_index} of {r.suite}/{r.task} is recorded as a "
                                     f"{old.outcome} in {old_place} and as a {r.outcome} in {place}; "
                                     "remove the wrong run dir (or record)")
            if old.error is not None and r.error is None:  # a finished record wins over an errored one
                kept[k] = (i, o, r, place)
    if dropped:
        total = sum(dropped.values())
        files = ", ".join(str(p) for p in list(dropped)[:3]) + (", ..." if len(dropped) > 3 else "")
        print(f"warning: {total} duplicate record(s) of episodes already counted were dropped "
              f"(same config and episode key; in {files})", file=sys.stderr)
    out: list[tuple[Path, list[EpisodeRecord]]] = [(d, []) for d in dirs]
    for i, _, r, _ in sorted(kept.values(), key=lambda v: v[1]):
        out[i][1].append(r)
    return out
