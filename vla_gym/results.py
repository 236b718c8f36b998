"""Episode records, success statistics and atomic result files.

Files a rollout writes (all under one run directory; the record itself is
:class:`vla_gym.records.EpisodeRecord`):

- ``episodes.jsonl``: one :class:`EpisodeRecord` per line, appended after each finished episode
  (append + fsync, so a crash loses at most the episode in flight).
- ``results.json``: the aggregate, rewritten atomically after every episode. Its shape follows
  LeRobot's ``eval_info.json`` (``per_task``, ``per_group``, ``overall`` with ``pc_success``),
  plus Wilson 95% intervals.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from vla_gym.records import EpisodeRecord

__all__ = [
    "EpisodeRecord", "aggregate", "append_record", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
    "load_records", "metric_summary", "summarize", "wilson_interval",
]


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95%).

    Unlike the normal approximation it stays inside [0, 1] and is sensible for 0/n and n/n,
    which matter with the 10-50 episodes per task typical of VLA evals.
    """
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def metric_summary(records: Iterable[EpisodeRecord]) -> dict[str, dict[str, float | int]]:
    """Per trajectory metric (``EpisodeRecord.metrics``): mean, standard deviation (ddof 0), min, max and
    ``n``, over the finished episodes where it is defined (not None); errored episodes have none."""
    values: dict[str, list[float]] = {}
    for r in records:
        if r.error is not None or not isinstance(r.metrics, dict):
            continue
        for name, v in r.metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                values.setdefault(str(name), []).append(float(v))
    out = {}
    for name, vs in sorted(values.items()):
        mean = sum(vs) / len(vs)
        out[name] = {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in vs) / len(vs)),
                     "min": min(vs), "max": max(vs), "n": len(vs)}
    return out


def summarize(records: Iterable[EpisodeRecord]) -> dict[str, Any]:
    """Success rate, Wilson interval, episodes and mean steps of a set of episodes (and their metrics' spread)."""
    records = list(records)
    n = len(records)
    k = sum(r.success for r in records)
    lo, hi = wilson_interval(k, n)
    metrics = metric_summary(records)
    return {**({"metrics": metrics} if metrics else {}),
        "episodes": n,
        "successes": k,
        "errors": sum(r.error is not None for r in records),
        "success_rate": k / n if n else 0.0,
        "pc_success": 100.0 * k / n if n else 0.0,
        "ci95": [lo, hi],
        "mean_steps": sum(r.steps for r in records) / n if n else 0.0,
        "avg_sum_reward": sum(r.sum_reward for r in records) / n if n else 0.0,
        "eval_s": sum(r.wall_s for r in records),
    }


def aggregate(records: list[EpisodeRecord], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build ``results.json``: per task, per suite (group) and overall summaries."""
    by_task: dict[str, list[EpisodeRecord]] = {}
    by_suite: dict[str, list[EpisodeRecord]] = {}
    for r in records:
        by_task.setdefault(f"{r.suite}/{r.task}", []).append(r)
        by_suite.setdefault(r.suite, []).append(r)
    return {
        "meta": meta or {},
        "per_task": {name: {**summarize(rs), "suite": rs[0].suite, "task": rs[0].task,
                            "task_index": rs[0].task_index, "instruction": rs[0].instruction}
                     for name, rs in sorted(by_task.items())},
        "per_group": {name: summarize(rs) for name, rs in sorted(by_suite.items())},
        "overall": summarize(records),
        "video_paths": [r.video for r in records if r.video],
    }


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    ``os.umask`` can only be read by setting it: between the set and the restore every other
    thread creating a file would get the temporary mask. Linux (>= 4.7) shows the mask in
    ``/proc/self/status``, so that is read first; elsewhere the set-and-restore fallback keeps
    that small race (acceptable: it lasts two system calls, and only for threads creating files).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """Mode a plain ``open(path, "w")`` would give a new file: ``0o666`` minus the umask."""
    return 0o666 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + rename, so readers never see half a file.

    ``mkstemp`` creates the temp file with mode 0600; it is set to the mode the umask gives any
    new file before the rename, so others on a shared cluster can read reports and results
    exactly when they could read the user's other files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), new_file_mode())
            else:  # Windows before Python 3.13: only the read-only bit exists there anyway
                os.chmod(tmp, new_file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_record(path: str | os.PathLike, record: EpisodeRecord) -> None:
    """Append one episode to ``episodes.jsonl`` and fsync it.

    If a crash left a torn last line, start on a fresh line so this record stays readable.
    """
    path = Path(path)
    torn = False
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(asdict(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_records(path: str | os.PathLike) -> list[EpisodeRecord]:
    """Read ``episodes.jsonl`` leniently (unreadable lines are skipped without a word).

    For tests and quick looks; the runner reads through :class:`vla_gym.run_store.RunStore`, which
    uses the schema-checking loader of :mod:`vla_gym.records` (warnings with ``file:line``) and drops duplicates.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(EpisodeRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return records
