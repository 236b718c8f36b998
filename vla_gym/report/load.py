"""Find rollout run directories and read their episodes.

A run directory is any directory holding ``episodes.jsonl`` (written by ``python -m
vla_gym.rollout``). Users point the report at single runs, at a Hydra multirun parent
(``0/``, ``1/``, ...) or at a tree of both, so discovery is recursive.

Run directories are shared between people, so nothing read from them is trusted: every
``episodes.jsonl`` line is checked against :data:`RECORD_SCHEMA` and a line that does not fit
is reported as ``warning: FILE:LINE: ...`` and skipped, never a traceback or bad markup later.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_gym.records import (  # noqa: F401  (re-exported: the record schema lives in vla_gym.records)
    EPISODES_FILE, MAX_NAME_CHARS, RECORD_SCHEMA, RESULTS_FILE, EpisodeRecord, RecordConflict, RecordError,
    parse_record, read_episodes,
)
from vla_gym.run_reader import read_runs

UNPERTURBED = "none"


class ReportInputError(ValueError):
    """Inputs the report cannot use; the message says which file or path and how to fix it."""


@dataclass(frozen=True)
class Episode:
    """One episode together with where it came from, so video paths can be resolved."""

    record: EpisodeRecord
    run_dir: Path
    policy: str
    """Policy label used in every table: the record's policy name, plus ``[quantization]``
    when the run was quantized, so int8 and bf16 runs of one model are not pooled."""
    timing: str = "synchronous"
    """Execution timing of the run (``results.json`` meta; runs before it existed are synchronous)."""
    latency_ms: float = 0.0
    """The run's configured simulated latency (0 for synchronous, which ignores it)."""

    @property
    def task_id(self) -> str:
        """``suite/task``: task names alone can repeat across suites."""
        return f"{self.record.suite}/{self.record.task}"

    @property
    def strength(self) -> float:
        """Perturbation strength rounded so float noise from configs does not split groups."""
        return round(float(self.record.perturbation_strength), 9)

    @property
    def outcome(self) -> str:
        """``success``, ``failure`` or ``error`` (an episode that crashed counts as a failure)."""
        if self.record.error is not None:
            return "error"
        return "success" if self.record.success else "failure"


@dataclass
class Run:
    """One run directory: its ``results.json`` meta and its episodes."""

    path: Path
    meta: dict[str, Any]
    episodes: list[Episode] = field(default_factory=list)


def discover_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Return every run directory at or below ``paths`` (sorted, without duplicates).

    Raises:
        ReportInputError: a path does not exist, or no run directory was found at all.
    """
    paths = [Path(p) for p in paths]
    found: dict[Path, None] = {}
    for p in paths:
        if not p.exists():
            raise ReportInputError(f"path does not exist: {p}")
        if p.is_file():
            if p.name != EPISODES_FILE:
                raise ReportInputError(
                    f"{p} is a file; pass a run directory (one holding {EPISODES_FILE}) "
                    "or a parent of run dirs"
                )
            found.setdefault(p.parent.resolve(), None)
            continue
        for root, dirs, files in os.walk(p):
            # Hidden dirs (.hydra, .git) never hold runs; sorting keeps the order stable.
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if EPISODES_FILE in files:
                found.setdefault(Path(root).resolve(), None)
    if not found:
        searched = ", ".join(str(p) for p in paths)
        raise ReportInputError(
            f"no run directories (directories holding {EPISODES_FILE}) found under: {searched}. "
            "Pass the output directory of `python -m vla_gym.rollout` or its multirun parent."
        )
    return sorted(found)


def _meta_name(value: Any) -> str:
    """Name of a meta entry that may be a plain string or a config dict with ``name``."""
    if isinstance(value, dict):
        value = value.get("name") or value.get("_name_") or ""
    return "" if value is None else str(value)


def policy_label(record: EpisodeRecord, meta: dict[str, Any], run_dir: Path) -> str:
    """Label for the policy of ``record``: name, then ``[quantization]`` if one was used.

    ``results.json`` and directory names are as untrusted as the records, so control
    characters become ``?`` and the label is capped like a record's names.
    """
    name = record.policy or _meta_name(meta.get("policy")) or run_dir.name
    quant = _meta_name(meta.get("quantization")).strip()
    if quant and quant.lower() not in {"none", "null"}:
        name = f"{name}[{quant}]"
    name = "".join("?" if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in name)
    return name.encode("utf-8", "replace").decode("utf-8")[:MAX_NAME_CHARS]


def _read_meta(run_dir: Path) -> dict[str, Any]:
    """``results.json``'s meta, or ``{}`` when the file is absent or unreadable (run in progress)."""
    path = run_dir / RESULTS_FILE
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text()).get("meta", {})
    except (json.JSONDecodeError, AttributeError, OSError) as e:
        print(f"warning: ignoring unreadable {path}: {e}", file=sys.stderr)
        return {}
    return meta if isinstance(meta, dict) else {}


TIMINGS = ("synchronous", "blocking", "async")


def execution_of(meta: dict[str, Any]) -> tuple[str, float]:
    """(timing, latency ms) from a run's untrusted meta: unknown or missing values read as synchronous.

    The latency is ``execution.latency.ms`` (``mean_ms`` for a distribution when given); for the
    ``measured`` / ``trace`` / ``profile`` sources it is that key too (their per-query values are in
    the metrics' ``latency_ms_mean``), and the source is appended to the timing label.
    """
    ex = meta.get("execution")
    if not isinstance(ex, dict) or ex.get("timing") not in TIMINGS or ex.get("timing") == "synchronous":
        return "synchronous", 0.0
    lat = ex.get("latency") if isinstance(ex.get("latency"), dict) else {}
    ms = lat.get("mean_ms") if lat.get("source") == "distribution" and lat.get("mean_ms") is not None else lat.get("ms")
    ms = float(ms) if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms == ms and ms >= 0 else 0.0
    source = lat.get("source")
    label = str(ex["timing"]) if source in (None, "fixed") else f"{ex['timing']}/{str(source)[:32]}"
    return "".join("?" if ord(c) < 32 else c for c in label), round(ms, 6)


def _run(run_dir: Path, records: list[EpisodeRecord]) -> Run:
    meta = _read_meta(run_dir)
    run = Run(path=run_dir, meta=meta)
    timing, latency = execution_of(meta)
    for rec in records:
        run.episodes.append(Episode(record=rec, run_dir=run_dir, policy=policy_label(rec, meta, run_dir),
                                    timing=timing, latency_ms=latency))
    return run


def load_run(run_dir: Path) -> Run:
    """Read one run directory (each episode once)."""
    return load_runs([run_dir])[0]


def load_runs(paths: Iterable[str | os.PathLike]) -> list[Run]:
    """Discover and read all runs under ``paths``; runs without any episode are skipped.

    Every episode is counted once (:func:`vla_gym.run_reader.read_runs`: duplicates within a file
    and across dirs of one config dropped with a warning, a merged dir replacing its sources).

    Raises:
        ReportInputError: nothing found, every run found is empty, or one episode is recorded
            with two outcomes (naming both files).
    """
    runs, empty = [], []
    try:
        found = read_runs(discover_run_dirs(paths))
    except RecordConflict as e:
        raise ReportInputError(str(e)) from None
    for d, records in found:
        run = _run(d, records)
        (runs if run.episodes else empty).append(run)
    for run in empty:
        print(f"warning: {run.path / EPISODES_FILE} has no complete episode; skipped", file=sys.stderr)
    if not runs:
        raise ReportInputError(
            "every run directory found has an empty episodes.jsonl: " + ", ".join(str(r.path) for r in empty)
        )
    return runs


def all_episodes(runs: Iterable[Run]) -> list[Episode]:
    """Flatten runs into one list of episodes."""
    return [e for r in runs for e in r.episodes]
