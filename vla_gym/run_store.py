"""The run store: one run directory's episode records, results, lock, resume and fingerprint.

A run directory holds::

    run.lock        while a run writes here: flock'ed, with the holder's pid/host (removed at exit)
    run.json        the config fingerprint and the fingerprinted config subtree (written at start)
    episodes.jsonl  one EpisodeRecord per line, at most one per episode key
    results.json    the aggregate, rewritten atomically after every episode

:class:`RunStore` is the only writer. It refuses a second writer while one holds the lock (the
lock is ``fcntl.flock``, which the kernel drops when its holder dies, so a killed run never
leaves a stale lock), refuses a directory whose ``run.json`` has another outcome-changing
config (naming the keys that differ), reads records through the schema-checking loader
(:func:`vla_gym.records.read_numbered`: bad lines are warnings with ``file:line``), drops
duplicate records of one episode (two finished ones with different outcomes are an error
naming both lines), and replaces an errored episode's record when it is
retried, keeping the earlier errors in ``extra["previous_errors"]``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from vla_gym.records import (  # noqa: F401  (keys and dedupe re-exported: their home is vla_gym.records)
    EPISODES_FILE, RESULTS_FILE, RUN_FILE, EpisodeKey, EpisodeRecord, RecordConflict, RecordError, dedupe,
    episode_key, parse_record, read_episodes, read_numbered, record_key, scene_key,
)
from vla_gym.results import aggregate, append_record, atomic_write_json, atomic_write_text

LOCK_FILE = "run.lock"

OUTCOME_KEYS: tuple[str, ...] = (
    "env", "policy", "quantization", "perturbation", "seed", "max_steps", "image_size", "render_quality",
    "chunk", "scene", "init_state_ids",
)
"""Config keys that change an episode's outcome. Not here: which episodes run (``tasks``,
``episodes_per_task``: a resume may extend a run), videos, output paths, ``retry_errors``."""


class RunStoreError(RuntimeError):
    """The run directory cannot be used; the message is one line saying why and what to do."""


class RunDirLocked(RunStoreError):
    """Another process is writing into the run directory."""


class ConfigMismatch(RunStoreError):
    """The run directory holds a run of another config."""


# ---------------------------------------------------------------------------- fingerprint
def outcome_config(cfg: Any) -> dict[str, Any]:
    """The outcome-changing subtree of a rollout config (:data:`OUTCOME_KEYS`), resolved, as plain data."""
    from omegaconf import OmegaConf

    from vla_gym.envs import DEPRECATED_IDS

    out = {}
    for k in OUTCOME_KEYS:
        v = cfg.get(k) if hasattr(cfg, "get") else getattr(cfg, k, None)
        out[k] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    execution = cfg.get("execution") if hasattr(cfg, "get") else getattr(cfg, "execution", None)
    if execution is not None and str(execution.get("timing", "synchronous")) != "synchronous":
        # only a timed run is fingerprinted with its timing: synchronous run dirs keep theirs and resume
        out["execution"] = OmegaConf.to_container(execution, resolve=True) if OmegaConf.is_config(execution) \
            else execution
    legacy = {new: old for old, new in DEPRECATED_IDS.items()}
    env = out.get("env")
    if isinstance(env, dict) and env.get("id") in legacy:
        # v1 ids are the same envs under new names: fingerprinted as before, so earlier run dirs resume
        out["env"] = {**env, "id": legacy[env["id"]]}
    return json.loads(json.dumps(out, sort_keys=True, default=str))  # plain JSON types, as run.json holds them


def fingerprint(outcome: dict[str, Any]) -> str:
    """Short hash of :func:`outcome_config`'s result."""
    blob = json.dumps(outcome, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for each dotted key whose value differs (``<unset>`` where absent)."""
    a, b = _flatten(old), _flatten(new)
    unset = "<unset>"
    return [f"{k}: {json.dumps(a.get(k, unset))} -> {json.dumps(b.get(k, unset))}"
            for k in sorted(set(a) | set(b)) if a.get(k, unset) != b.get(k, unset)]


# ---------------------------------------------------------------------------- lock
def read_holder(path: str | os.PathLike) -> dict[str, Any]:
    """What a lock file says about its holder (``{}`` if unreadable)."""
    try:
        data = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class RunLock:
    """Exclusive lock on a run directory: ``fcntl.flock`` on ``run.lock``, which names its holder.

    Non-blocking: a second process gets :class:`RunDirLocked` at once, naming the holder's pid and
    host. The kernel releases a flock when its holder dies (even by SIGKILL), so the next run just
    takes it over. On release the file is removed while still locked; acquiring checks that the
    locked file is still the one at the path, so a racing remover cannot split the lock. flock
    works on local file systems and on NFS (Linux >= 2.6.12, as a POSIX lock).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunStoreError` naming its holder."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (BlockingIOError, PermissionError):
                os.close(fd)
                h = read_holder(self.path)
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["since"])) if "since" in h else "?"
                raise RunDirLocked(
                    f"{self.path.parent} is in use by another run (pid {h.get('pid', '?')} on host "
                    f"{h.get('host', '?')}, since {since}); wait for it to finish or choose another output dir "
                    "(hydra.run.dir=...)"
                ) from None
            except OSError as e:  # e.g. ENOLCK: a file system without locks
                os.close(fd)
                raise RunStoreError(f"cannot lock {self.path} ({e.strerror or e}); use a run dir on a file system "
                                    "with flock support") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file between our open and flock: retry
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Release the lock and remove ``run.lock`` (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ---------------------------------------------------------------------------- store
def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


class RunStore:
    """Records of one run directory, for one writer at a time.

    Use as a context manager (or :meth:`open` / :meth:`close`)::

        with RunStore(out, outcome_config(cfg)) as store:   # lock, check run.json, load
            ...                                             # validate / build, then:
            store.start()                                   # run.json, if the dir is new
            if not store.is_done(key): store.add(record)    # append (or replace a retried error)
            store.write_results(meta)

    Args:
        directory: The run directory.
        outcome: :func:`outcome_config` of the run's config; compared with ``run.json``'s.
        retry_errors: Whether an episode whose record has an ``error`` counts as not done.
    """

    def __init__(self, directory: str | os.PathLike, outcome: dict[str, Any], *, retry_errors: bool = True) -> None:
        self.dir = Path(directory)
        self.outcome = outcome
        self.fingerprint = fingerprint(outcome)
        self.retry_errors = bool(retry_errors)
        self.lock = RunLock(self.dir)
        self.records: list[EpisodeRecord] = []
        self._by_key: dict[EpisodeKey, int] = {}
        self._skipped_lines = 0

    @property
    def episodes_path(self) -> Path:
        """The run's ``episodes.jsonl``."""
        return self.dir / EPISODES_FILE

    # -- opening
    def open(self) -> RunStore:
        """Lock the directory, refuse a run of another config, load and clean up the records."""
        self.lock.acquire()
        try:
            self._check_run_file()
            self._load()
        except BaseException:
            self.lock.release()
            raise
        return self

    def close(self) -> None:
        """Release the run directory's lock."""
        self.lock.release()

    def __enter__(self) -> RunStore:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_run_file(self) -> None:
        run_file = self.dir / RUN_FILE
        if not run_file.exists():
            if self.episodes_path.exists() and self.episodes_path.stat().st_size > 0:
                raise ConfigMismatch(f"{self.dir} holds episodes but no {RUN_FILE}, so their config is unknown; "
                                     "choose another output dir (hydra.run.dir=...) or delete that one")
            return
        try:
            previous = json.loads(run_file.read_text())
        except (OSError, ValueError) as e:
            raise ConfigMismatch(f"{run_file} is unreadable ({type(e).__name__}); choose another output dir "
                                 "(hydra.run.dir=...) or delete that one") from None
        if previous.get("config_fingerprint") == self.fingerprint:
            return
        if isinstance(previous.get("outcome_config"), dict):
            diff = config_diff(previous["outcome_config"], self.outcome)
            what = "differs in " + "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
        else:
            what = (f"fingerprint {previous.get('config_fingerprint')} != {self.fingerprint}; its {RUN_FILE} "
                    "predates per-key config records")
        raise ConfigMismatch(f"{self.dir} already holds a run with a different config ({what}); resuming would "
                             "mix results. Choose another output dir (hydra.run.dir=...) or delete that one.")

    def _load(self) -> None:
        path = self.episodes_path
        numbered = read_numbered(path)  # schema-checked; every skipped line is a file:line warning
        records = [r for _, r in numbered]
        if path.exists():
            self._repair_tail(path)
            nonblank = sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
            self._skipped_lines = max(0, nonblank - len(records))
        try:
            self.records, dropped = dedupe(records, [f"{path}:{line}" for line, _ in numbered])
        except RecordConflict as e:
            raise RunStoreError(str(e)) from None
        self._reindex()
        if dropped:
            _warn(f"{path}: dropped {dropped} duplicate record(s) of episodes recorded more than once "
                  "(two runs writing into one directory?)")
            self._rewrite()

    def _repair_tail(self, path: Path) -> None:
        """A torn last line (crash mid-append) is cut off, so it never becomes a corrupt middle line."""
        data = path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        try:
            parse_record(data[cut:])
        except RecordError:
            os.truncate(path, cut)
            return
        with open(path, "ab") as f:  # a complete record that lacks only its newline
            f.write(b"\n")

    def _reindex(self) -> None:
        self._by_key = {record_key(r): i for i, r in enumerate(self.records)}

    def _rewrite(self) -> None:
        """Replace ``episodes.jsonl`` atomically with the current records.

        Lines the loader skipped would be lost by the rewrite: the original is kept beside it.
        """
        path = self.episodes_path
        if self._skipped_lines and path.exists():
            backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.bak")
            shutil.copy2(path, backup)
            _warn(f"{path}: rewritten without its {self._skipped_lines} unreadable line(s); "
                  f"the original is kept as {backup.name}")
            self._skipped_lines = 0
        atomic_write_text(path, "".join(json.dumps(asdict(r)) + "\n" for r in self.records))

    # -- writing
    def start(self, **info: Any) -> None:
        """Record the run's config in ``run.json`` (once: a resumed run keeps the first one)."""
        run_file = self.dir / RUN_FILE
        if not run_file.exists():
            atomic_write_json(run_file, {"config_fingerprint": self.fingerprint, "outcome_config": self.outcome,
                                         "created": time.time(), **info})

    def get(self, key: EpisodeKey) -> EpisodeRecord | None:
        """The stored record of episode ``key``, or None."""
        i = self._by_key.get(key)
        return None if i is None else self.records[i]

    def is_done(self, key: EpisodeKey) -> bool:
        """Whether the episode needs no (re)run: recorded, and not an error to retry."""
        r = self.get(key)
        return r is not None and (r.error is None or not self.retry_errors)

    def add(self, record: EpisodeRecord) -> EpisodeRecord:
        """Store one episode: appended, or replacing the errored record of a retried episode."""
        if not self.lock.held:
            raise RunStoreError("the run store is not open (lock not held)")
        key = record_key(record)
        i = self._by_key.get(key)
        if i is None:
            append_record(self.episodes_path, record)
            self._by_key[key] = len(self.records)
            self.records.append(record)
            return record
        old = self.records[i]
        history = [*old.extra.get("previous_errors", []), *([old.error] if old.error else [])]
        if history:
            record = replace(record, extra={**record.extra, "previous_errors": history})
        self.records[i] = record
        self._rewrite()
        return record

    def results(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The ``results.json`` aggregate of the stored records with ``meta``."""
        return aggregate(self.records, meta)

    def write_results(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Rewrite ``results.json`` atomically; returns the aggregate."""
        res = self.results(meta)
        atomic_write_json(self.dir / RESULTS_FILE, res)
        return res
