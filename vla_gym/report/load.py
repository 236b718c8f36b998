"""Find rollout run directories and read their episodes.

A run directory is any directory holding ``episodes.jsonl`` (written by ``python -m
vla_gym.rollout``). Users point the report at single runs, at a Hydra multirun parent
(``0/``, ``1/``, ...) or at a tree of both, so discovery is recursive.

Run directories are shared between people, so nothing read from them is trusted: every
``episodes.jsonl`` line is checked against :data:`RECORD_SCHEMA` and a line that does not fit
is reported as ``warning: FILE:LINE: ...`` and skipped, never a traceback or bad markup later.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from vla_gym.results import EpisodeRecord

EPISODES_FILE = "episodes.jsonl"
RESULTS_FILE = "results.json"
UNPERTURBED = "none"


class ReportInputError(ValueError):
    """Inputs the report cannot use; the message says which file or path and how to fix it."""


class RecordError(ValueError):
    """Why one ``episodes.jsonl`` line is not a usable record (the message names the field)."""


_NONE = type(None)
RECORD_SCHEMA: dict[str, tuple[type, ...]] = {
    "suite": (str,),
    "task": (str,),
    "task_index": (int,),
    "init_state_id": (int, _NONE),
    "episode_index": (int,),
    "seed": (int,),
    "instruction": (str,),
    "success": (bool,),
    "steps": (int,),
    "sum_reward": (float,),
    "wall_s": (float,),
    "latency_ms_mean": (float,),
    "latency_ms_p95": (float,),
    "policy_queries": (int,),
    "video": (str, _NONE),
    "error": (str, _NONE),
    "policy": (str,),
    "perturbation": (str,),
    "perturbation_strength": (float,),
    "extra": (dict,),
}
"""JSON types allowed per :class:`EpisodeRecord` field. ``int`` excludes booleans; ``float``
accepts ints too and only finite values. Fields without a default in the record are required."""

_REQUIRED = [
    f.name
    for f in dataclasses.fields(EpisodeRecord)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
]
NAME_FIELDS = frozenset({"suite", "task", "policy", "perturbation", "video"})
"""Identifiers printed in terminal tables and used as filter values: no control characters."""
MAX_NAME_CHARS = 512  # LIBERO task names are ~100 characters
MAX_TEXT_CHARS = {"instruction": 4096, "video": 1024, "error": 8192}
MAX_LINE_BYTES = 1 << 20
MAX_INT = 2**63  # ints must fit a signed 64-bit integer
MAX_WARNINGS_PER_FILE = 20


@dataclass(frozen=True)
class Episode:
    """One episode together with where it came from, so video paths can be resolved."""

    record: EpisodeRecord
    run_dir: Path
    policy: str
    """Policy label used in every table: the record's policy name, plus ``[quantization]``
    when the run was quantized, so int8 and bf16 runs of one model are not pooled."""

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


def _show(value: Any) -> str:
    """Short, escaped rendering of an untrusted value for a warning (no terminal escapes)."""
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(t: type) -> str:
    """JSON's name for a Python type, as a user editing ``episodes.jsonl`` sees it."""
    names = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}
    return "null" if t is _NONE else names.get(t, t.__name__)


def _check_text(name: str, value: str) -> str:
    """Length, encoding and (for identifiers) control-character checks of a string field."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError(f"field {name!r} is not valid Unicode text (lone surrogate)") from None
    if name in NAME_FIELDS and any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise RecordError(f"field {name!r} contains control characters: {_show(value)}")
    limit = MAX_TEXT_CHARS.get(name, MAX_NAME_CHARS)
    if len(value) > limit:
        if name == "error":  # keep the crashed episode counted; the message tail is expendable
            return value[:limit] + " ... (truncated)"
        raise RecordError(f"field {name!r} is longer than {limit} characters ({len(value)})")
    if name == "video":
        parts = PurePosixPath(value).parts
        if not value or value.startswith("/") or "\\" in value or ".." in parts:
            raise RecordError(
                f"field 'video' must be a relative path inside the run directory, got {_show(value)}"
            )
    return value


def _check_field(name: str, value: Any, allowed: tuple[type, ...]) -> Any:
    """``value`` if it has one of the ``allowed`` types (see :data:`RECORD_SCHEMA`), else raise."""
    if value is None:
        ok = _NONE in allowed
    elif isinstance(value, bool):  # before int: bool is an int subclass in Python, not in JSON
        ok = bool in allowed
    elif isinstance(value, int):
        ok = int in allowed or float in allowed
    elif isinstance(value, float):
        ok = float in allowed
    else:
        ok = any(isinstance(value, t) for t in allowed if t in (str, dict))
    if not ok:
        want = " or ".join(_json_type(t) for t in allowed)
        raise RecordError(f"field {name!r} must be {want}, got {_json_type(type(value))} {_show(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, int) and not -MAX_INT <= value < MAX_INT:
            raise RecordError(f"field {name!r} is out of range: {_show(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise RecordError(f"field {name!r} must be finite, got {value}")
        return float(value) if float in allowed else value
    if isinstance(value, str):
        return _check_text(name, value)
    return value


def parse_record(raw: bytes) -> tuple[EpisodeRecord, list[str]]:
    """One ``episodes.jsonl`` line as a checked record, plus the unknown field names it had.

    Unknown fields (a newer writer) are ignored, not fatal; nothing renders them.

    Raises:
        RecordError: the line is not UTF-8 JSON, not an object, or breaks :data:`RECORD_SCHEMA`.
    """
    if len(raw) > MAX_LINE_BYTES:
        raise RecordError(f"line is longer than {MAX_LINE_BYTES} bytes")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecordError("line is not UTF-8") from None
    except (ValueError, RecursionError) as e:
        raise RecordError(f"not JSON ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(obj, dict):
        raise RecordError(f"expected a JSON object, got {_json_type(type(obj))}")
    missing = [f for f in _REQUIRED if f not in obj]
    if missing:
        raise RecordError("missing field(s): " + ", ".join(missing))
    values, unknown = {}, []
    for name, value in obj.items():
        allowed = RECORD_SCHEMA.get(name)
        if allowed is None:
            unknown.append(name)
        else:
            values[name] = _check_field(name, value, allowed)
    return EpisodeRecord(**values), unknown


def read_episodes(path: Path) -> list[EpisodeRecord]:
    """The valid records of one ``episodes.jsonl``; every other line is a warning on stderr.

    A last line without its newline that is not JSON is a crash mid-append, expected after an
    interrupted run; it is noted like the others. The report and ``vla_gym.merge`` both read
    records only through here.
    """
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records: list[EpisodeRecord] = []
    problems: list[str] = []
    unknown: dict[str, None] = {}
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec, extra = parse_record(raw)
        except RecordError as e:
            torn = lineno == len(lines) and str(e).startswith("not JSON")
            problems.append(
                f"{path}:{lineno}: incomplete last line ignored (run interrupted mid-write?)"
                if torn
                else f"{path}:{lineno}: record skipped: {e}"
            )
            continue
        records.append(rec)
        unknown.update(dict.fromkeys(extra))
    for msg in problems[:MAX_WARNINGS_PER_FILE]:
        print(f"warning: {msg}", file=sys.stderr)
    if len(problems) > MAX_WARNINGS_PER_FILE:
        print(f"warning: {path}: {len(problems) - MAX_WARNINGS_PER_FILE} more lines skipped", file=sys.stderr)
    if unknown:
        names = ", ".join(_show(n) for n in list(unknown)[:5]) + (", ..." if len(unknown) > 5 else "")
        print(f"warning: {path}: ignored unknown field(s) {names}", file=sys.stderr)
    return records


def load_run(run_dir: Path) -> Run:
    """Read one run directory."""
    meta = _read_meta(run_dir)
    run = Run(path=run_dir, meta=meta)
    for rec in read_episodes(run_dir / EPISODES_FILE):
        run.episodes.append(Episode(record=rec, run_dir=run_dir, policy=policy_label(rec, meta, run_dir)))
    return run


def load_runs(paths: Iterable[str | os.PathLike]) -> list[Run]:
    """Discover and read all runs under ``paths``; runs without any episode are skipped.

    Raises:
        ReportInputError: nothing found, or every run found is empty.
    """
    runs, empty = [], []
    for d in discover_run_dirs(paths):
        run = load_run(d)
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
