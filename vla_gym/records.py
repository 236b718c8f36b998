"""The episode record: its one schema, its key, and reading it back from ``episodes.jsonl``.

:class:`EpisodeRecord` is the only definition of a record. The runner writes it, the run store
and ``vla_gym.merge`` read it, the report renders it; the JSON types a stored line may have
(:data:`RECORD_SCHEMA`) are derived from the dataclass's annotations, so adding a field is one
edit here.

Run directories are shared between people, so nothing read from them is trusted: every line is
checked against the schema and a line that does not fit is a ``warning: FILE:LINE: ...`` and
skipped, never a traceback later.

An episode's identity inside a run is :func:`episode_key` (suite, task index, episode index,
initial state, scene). :func:`dedupe` is the one rule every reader applies to records of one
config: one record per key; a finished record wins over errored ones; two finished records with
different outcomes are a :class:`RecordConflict` naming both places.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Hashable

EPISODES_FILE = "episodes.jsonl"
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"

EpisodeKey = tuple[Hashable, ...]


@dataclass
class EpisodeRecord:
    """One finished (or crashed) episode: one line of ``episodes.jsonl``."""

    suite: str
    task: str
    task_index: int
    init_state_id: int | None
    episode_index: int
    seed: int
    instruction: str
    success: bool
    steps: int
    sum_reward: float
    wall_s: float
    latency_ms_mean: float = 0.0
    latency_ms_p95: float = 0.0
    policy_queries: int = 0
    video: str | None = None
    error: str | None = None
    policy: str = ""
    perturbation: str = "none"
    perturbation_strength: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    """Trajectory-quality and inference metrics (:func:`vla_gym.traj_metrics.episode_metrics`; None where
    undefined); empty in records written before they existed."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> EpisodeKey:
        """Identity of the episode inside a run (see :func:`record_key`)."""
        return record_key(self)

    @property
    def outcome(self) -> str:
        """``success``, ``failure`` or ``error``."""
        if self.error is not None:
            return "error"
        return "success" if self.success else "failure"


# ---------------------------------------------------------------------------- keys
def scene_key(scene: dict[str, Any] | None) -> tuple | None:
    """Hashable form of an episode's scene (``{"seeding", "seed", "index"}`` or None)."""
    if not scene:
        return None
    return (scene.get("seeding"), scene.get("seed"), scene.get("index"))


def episode_key(suite: str, task_index: int, episode_index: int, init_state_id: int | None,
                scene: dict[str, Any] | None) -> EpisodeKey:
    """Identity of an episode in a run: task, episode index, initial state and scene."""
    return (suite, int(task_index), int(episode_index), init_state_id, scene_key(scene))


def record_key(record: EpisodeRecord) -> EpisodeKey:
    """:func:`episode_key` of a stored record (its scene is ``extra["scene"]``)."""
    return episode_key(record.suite, record.task_index, record.episode_index, record.init_state_id,
                       record.extra.get("scene") if isinstance(record.extra, dict) else None)


class RecordConflict(ValueError):
    """One episode recorded twice with different outcomes; the message names both places."""


def dedupe(records: list[EpisodeRecord], where: list[str] | None = None) -> tuple[list[EpisodeRecord], int]:
    """One record per episode key, in first-seen order, and how many were dropped.

    A finished (non-error) record wins over errored ones; among errored ones the last is kept. The
    errors of dropped records go to the kept one's ``extra["previous_errors"]``. ``where`` names
    each record's place (``file:line``) for the conflict message.

    Raises:
        RecordConflict: two finished records of one key disagree on success.
    """
    groups: dict[EpisodeKey, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(record_key(r), []).append(i)
    out = []
    for idx in groups.values():
        rs = [records[i] for i in idx]
        if len(rs) == 1:
            out.append(rs[0])
            continue
        finished = [i for i in idx if records[i].error is None]
        outcomes = {records[i].success for i in finished}
        if len(outcomes) > 1:
            a = next(i for i in finished if records[i].success)
            b = next(i for i in finished if not records[i].success)
            places = where or [f"record {i + 1}" for i in range(len(records))]
            raise RecordConflict(f"episode {records[a].episode_index} of {records[a].suite}/{records[a].task} is "
                                 f"recorded as a success in {places[a]} and as a failure in {places[b]}; "
                                 "remove the wrong one (or one of the runs)")
        keep = records[finished[0]] if finished else rs[-1]
        history = [e for r in rs if r is not keep for e in [*r.extra.get("previous_errors", []), r.error] if e]
        if history:
            own = [e for e in keep.extra.get("previous_errors", []) if e not in history]
            keep = replace(keep, extra={**keep.extra, "previous_errors": history + own})
        out.append(keep)
    return out, len(records) - len(out)


# ---------------------------------------------------------------------------- schema
class RecordError(ValueError):
    """Why one ``episodes.jsonl`` line is not a usable record (the message names the field)."""


_NONE = type(None)


def _json_types(annotation: Any) -> tuple[type, ...]:
    """JSON-level types of a field annotation: ``int | None`` -> ``(int, NoneType)``; ``dict[...]`` -> ``(dict,)``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(t for a in typing.get_args(annotation) for t in _json_types(a))
    origin = typing.get_origin(annotation)
    return (origin,) if origin is not None else (annotation,)


RECORD_SCHEMA: dict[str, tuple[type, ...]] = {
    name: _json_types(hint) for name, hint in typing.get_type_hints(EpisodeRecord).items()
}
"""JSON types allowed per :class:`EpisodeRecord` field, from its annotations. ``int`` excludes
booleans; ``float`` accepts ints too and only finite values. Fields without a default are required."""

_REQUIRED = [f.name for f in dataclasses.fields(EpisodeRecord)
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
NAME_FIELDS = frozenset({"suite", "task", "policy", "perturbation", "video"})
"""Identifiers printed in terminal tables and used as filter values: no control characters."""
MAX_NAME_CHARS = 512  # LIBERO task names are ~100 characters
MAX_TEXT_CHARS = {"instruction": 4096, "video": 1024, "error": 8192}
MAX_LINE_BYTES = 1 << 20
MAX_INT = 2**63  # ints must fit a signed 64-bit integer
MAX_WARNINGS_PER_FILE = 20


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
            raise RecordError(f"field 'video' must be a relative path inside the run directory, got {_show(value)}")
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


def read_numbered(path: Path) -> list[tuple[int, EpisodeRecord]]:
    """The valid records of one ``episodes.jsonl`` with their line numbers; other lines are warnings.

    A last line without its newline that is not JSON is a crash mid-append, expected after an
    interrupted run; it is noted like the others.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records: list[tuple[int, EpisodeRecord]] = []
    problems: list[str] = []
    unknown: dict[str, None] = {}
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec, extra = parse_record(raw)
        except RecordError as e:
            torn = lineno == len(lines) and str(e).startswith("not JSON")
            problems.append(f"{path}:{lineno}: incomplete last line ignored (run interrupted mid-write?)" if torn
                            else f"{path}:{lineno}: record skipped: {e}")
            continue
        records.append((lineno, rec))
        unknown.update(dict.fromkeys(extra))
    for msg in problems[:MAX_WARNINGS_PER_FILE]:
        print(f"warning: {msg}", file=sys.stderr)
    if len(problems) > MAX_WARNINGS_PER_FILE:
        print(f"warning: {path}: {len(problems) - MAX_WARNINGS_PER_FILE} more lines skipped", file=sys.stderr)
    if unknown:
        names = ", ".join(_show(n) for n in list(unknown)[:5]) + (", ..." if len(unknown) > 5 else "")
        print(f"warning: {path}: ignored unknown field(s) {names}", file=sys.stderr)
    return records


def read_episodes(path: Path) -> list[EpisodeRecord]:
    """The valid records of one ``episodes.jsonl`` (as written: duplicates included); see :func:`read_numbered`."""
    return [r for _, r in read_numbered(path)]
