"""Where each policy query's simulated latency comes from (``execution.latency.source``).

One source per env, reset at that env's episode start, asked once per query:

- ``fixed``: the same ``ms`` every query.
- ``distribution``: log-normal with a given mean and 95th percentile, seeded per episode from
  ``(seed, episode seed)``, so an episode draws the same latencies whatever else runs.
- ``measured``: the policy call's own wall time times ``scale`` (slower or faster hardware).
  With ``num_envs > 1`` it is the time of the batched call the env took part in.
- ``trace``: a recorded per-query list replayed exactly (the ``latency_ms`` column of a run's
  trajectories), so a ``measured`` run can be replayed bit for bit.
- ``profile``: a row (policy x hardware x batch size) of a small JSON file of latencies; vla_gym
  ships ``published`` with the numbers papers report, each with its source.

These are *policy* latencies in simulated time; they differ from the ``latency`` /
``observation_latency`` perturbations, which delay every action or observation by a fixed number
of steps whatever the policy does (docs/how-to/real-time.md).
"""

from __future__ import annotations

import abc
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from statistics import NormalDist

import numpy as np

MAX_PROFILE_BYTES = 1 << 20
MAX_TRACE_BYTES = 64 << 20
Z95 = NormalDist().inv_cdf(0.95)


def check_ms(value: object, what: str, *, positive: bool = False) -> float:
    """``value`` as a finite float of milliseconds (``>= 0``, or ``> 0``), else one clear ValueError."""
    try:
        ms = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of milliseconds, got {value!r}") from None
    if not math.isfinite(ms) or ms < 0 or (positive and ms == 0):
        raise ValueError(f"{what} must be a finite number of ms {'> 0' if positive else '>= 0'}, got {value!r}")
    return ms


class LatencySource(abc.ABC):
    """One env's latencies: :meth:`reset` at its episode start, :meth:`next_ms` per query."""

    def reset(self, *, seed: int = 0, task: str | None = None, episode_index: int | None = None) -> None:
        """Episode start (``seed`` = the episode's seed; ``task``/``episode_index`` name its record)."""
        return None  # stateless sources: nothing to do

    @abc.abstractmethod
    def next_ms(self, measured_ms: float | None = None) -> float:
        """The next query's latency in ms; ``measured_ms`` is the policy call's wall time."""


class FixedLatency(LatencySource):
    """The same latency for every query."""

    def __init__(self, ms: float) -> None:
        self.ms = check_ms(ms, "execution.latency.ms")

    def next_ms(self, measured_ms: float | None = None) -> float:
        """The fixed latency, whatever the call took."""
        return self.ms


def lognormal_params(mean_ms: float, p95_ms: float) -> tuple[float, float]:
    """``(mu, sigma)`` of the log-normal with this mean and 95th percentile.

    From ``mean = exp(mu + s^2/2)`` and ``p95 = exp(mu + z s)``: ``s^2/2 - z s + ln(p95/mean) = 0``,
    the smaller root. Needs ``mean <= p95 <= mean * exp(z^2/2)`` (about 3.87 x mean).
    """
    mean_ms = check_ms(mean_ms, "execution.latency.mean_ms", positive=True)
    p95_ms = check_ms(p95_ms, "execution.latency.p95_ms", positive=True)
    r = math.log(p95_ms / mean_ms)
    if r < 0 or 2 * r > Z95 ** 2:
        raise ValueError(f"no log-normal has mean {mean_ms} ms and p95 {p95_ms} ms: p95 must lie in "
                         f"[mean, {math.exp(Z95 ** 2 / 2):.2f} x mean]")
    sigma = Z95 - math.sqrt(Z95 ** 2 - 2 * r)
    return math.log(mean_ms) - sigma ** 2 / 2, sigma


class LogNormalLatency(LatencySource):
    """Log-normal latencies with the given mean and p95, drawn from an RNG seeded per episode."""

    def __init__(self, mean_ms: float, p95_ms: float, seed: int = 0) -> None:
        self.mu, self.sigma = lognormal_params(mean_ms, p95_ms)
        if int(seed) != seed or seed < 0:
            raise ValueError(f"execution.latency.seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        self._rng = np.random.default_rng([self.seed, 0])

    def reset(self, *, seed: int = 0, task: str | None = None, episode_index: int | None = None) -> None:
        """Seed this episode's draws from the source's seed and the episode seed (same episode, same latencies)."""
        if int(seed) < 0:
            raise ValueError(f"episode seed must be >= 0 to seed the latency distribution, got {seed}")
        self._rng = np.random.default_rng([self.seed, int(seed)])

    def next_ms(self, measured_ms: float | None = None) -> float:
        """One log-normal draw in ms."""
        return float(self._rng.lognormal(self.mu, self.sigma))


class MeasuredLatency(LatencySource):
    """The policy call's own wall time times ``scale``."""

    def __init__(self, scale: float = 1.0) -> None:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"execution.latency.scale must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)

    def next_ms(self, measured_ms: float | None = None) -> float:
        """The policy call's measured wall time times ``scale``."""
        if measured_ms is None:
            raise ValueError("latency source 'measured' needs the policy call's wall time")
        return check_ms(measured_ms, "measured policy call time") * self.scale


def read_trace(path: str | os.PathLike) -> list[float]:
    """The per-query latencies of one recorded trajectory (``latency_ms`` where ``query``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"latency trace: no recorded trajectory at {path}")
    if path.stat().st_size > MAX_TRACE_BYTES:
        raise ValueError(f"latency trace: {path} is larger than {MAX_TRACE_BYTES} bytes")
    with np.load(path, allow_pickle=False) as z:
        if "latency_ms" not in z or "query" not in z:
            raise ValueError(f"latency trace: {path} has no latency_ms/query columns "
                             "(recorded without execution timing)")
        lat, query = np.asarray(z["latency_ms"], dtype=np.float64), np.asarray(z["query"], dtype=bool)
    if lat.shape != query.shape:
        raise ValueError(f"latency trace: {path}: latency_ms {lat.shape} and query {query.shape} differ in shape")
    trace = lat[query]
    if not np.all(np.isfinite(trace) & (trace >= 0)):
        raise ValueError(f"latency trace: {path} holds a negative or non-finite latency")
    return [float(x) for x in trace]


class TraceLatency(LatencySource):
    """Replays recorded per-query latencies exactly; asking for more than were recorded is an error.

    Args:
        trace: One list for every episode (tests, scripts), or None with ``run_dir``.
        run_dir: A run directory with trajectories: each episode replays its own record
            (``trajectories/<task>/epNNN.npz``), so :meth:`reset` needs ``task`` and ``episode_index``.
    """

    def __init__(self, trace: Sequence[float] | None = None, run_dir: str | os.PathLike | None = None) -> None:
        if (trace is None) == (run_dir is None):
            raise ValueError("latency source 'trace' needs exactly one of a list of ms or a run directory "
                             "(execution.latency.trace)")
        self._fixed = None if trace is None else [check_ms(x, "trace latency") for x in trace]
        self.run_dir = None if run_dir is None else Path(run_dir)
        if self.run_dir is not None and not self.run_dir.is_dir():
            raise ValueError(f"execution.latency.trace: {self.run_dir} is not a directory")
        self._trace: list[float] = list(self._fixed or [])
        self._next = 0
        self._where = "the trace"

    def reset(self, *, seed: int = 0, task: str | None = None, episode_index: int | None = None) -> None:
        """Start replaying the trace recorded for this task and episode."""
        self._next = 0
        if self.run_dir is None:
            return
        if task is None or episode_index is None:
            raise ValueError("latency source 'trace' replays per episode: reset needs task and episode_index")
        from vla_gym.trajectory import trajectory_rel

        path = self.run_dir / trajectory_rel(task, episode_index)
        self._trace, self._where = read_trace(path), str(path)

    def next_ms(self, measured_ms: float | None = None) -> float:
        """The next recorded latency; raises when the replay asks for more queries than were recorded."""
        if self._next >= len(self._trace):
            raise ValueError(f"latency trace exhausted: {self._where} recorded {len(self._trace)} queries and the "
                             "replay asked for more (the replayed run differs from the recorded one)")
        self._next += 1
        return self._trace[self._next - 1]


# ---------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class ProfileEntry:
    """One measured or published latency: policy x hardware x batch size."""

    policy: str
    hardware: str
    batch_size: int
    ms: float
    source: str
    p95_ms: float | None = None
    note: str = ""


PROFILE_FORMAT = "vla_gym.latency_profile/1"
_ENTRY_KEYS = {"policy", "hardware", "batch_size", "ms", "p95_ms", "source", "note"}


def _profile_path(name_or_path: str) -> Path:
    if "/" not in name_or_path and not name_or_path.endswith(".json"):
        shipped = resources.files("vla_gym.conf") / "execution" / "profiles" / f"{name_or_path}.json"
        if not shipped.is_file():
            raise ValueError(f"no shipped latency profile {name_or_path!r}; give a path to a JSON file "
                             f"or one of: {', '.join(shipped_profiles())}")
        return Path(str(shipped))
    return Path(name_or_path)


def shipped_profiles() -> list[str]:
    """Names of the latency profiles that ship with vla_gym."""
    d = resources.files("vla_gym.conf") / "execution" / "profiles"
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".json"))


def load_profile(name_or_path: str) -> list[ProfileEntry]:
    """A latency profile: a shipped name (``published``) or a JSON file, validated.

    Format: ``{"format": "vla_gym.latency_profile/1", "entries": [{"policy", "hardware",
    "batch_size", "ms", "source", optional "p95_ms", "note"}, ...]}``. No code, no pickle; at most
    1 MiB.
    """
    path = _profile_path(str(name_or_path))
    if not path.is_file():
        raise ValueError(f"latency profile {path} does not exist")
    if path.stat().st_size > MAX_PROFILE_BYTES:
        raise ValueError(f"latency profile {path} is larger than {MAX_PROFILE_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"latency profile {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT or not isinstance(data.get("entries"), list):
        raise ValueError(f"latency profile {path} must be an object with \"format\": \"{PROFILE_FORMAT}\" "
                         "and an \"entries\" list")
    out, seen = [], set()
    for i, e in enumerate(data["entries"]):
        where = f"latency profile {path}, entry {i}"
        if not isinstance(e, dict) or not {"policy", "hardware", "batch_size", "ms", "source"} <= set(e):
            raise ValueError(f"{where}: needs policy, hardware, batch_size, ms and source")
        if set(e) - _ENTRY_KEYS:
            raise ValueError(f"{where}: unknown keys {sorted(set(e) - _ENTRY_KEYS)}")
        if not all(isinstance(e[k], str) and e[k] for k in ("policy", "hardware", "source")):
            raise ValueError(f"{where}: policy, hardware and source must be non-empty strings")
        if not isinstance(e["batch_size"], int) or isinstance(e["batch_size"], bool) or e["batch_size"] < 1:
            raise ValueError(f"{where}: batch_size must be an integer >= 1, got {e['batch_size']!r}")
        entry = ProfileEntry(policy=e["policy"], hardware=e["hardware"], batch_size=e["batch_size"],
                             ms=check_ms(e["ms"], f"{where}: ms", positive=True), source=e["source"],
                             p95_ms=None if e.get("p95_ms") is None else check_ms(e["p95_ms"], f"{where}: p95_ms"),
                             note=str(e.get("note", "")))
        if entry.p95_ms is not None:
            lognormal_params(entry.ms, entry.p95_ms)
        key = (entry.policy, entry.hardware, entry.batch_size)
        if key in seen:
            raise ValueError(f"{where}: duplicate row {key}")
        seen.add(key)
        out.append(entry)
    return out


def save_profile(entries: list[ProfileEntry], path: str | os.PathLike, about: str = "") -> Path:
    """Write ``entries`` as a profile file (what ``benchmarks/policy_latency.py --profile-out`` does)."""
    rows = []
    for e in entries:
        row = {"policy": e.policy, "hardware": e.hardware, "batch_size": e.batch_size, "ms": e.ms, "source": e.source}
        if e.p95_ms is not None:
            row["p95_ms"] = e.p95_ms
        if e.note:
            row["note"] = e.note
        rows.append(row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": PROFILE_FORMAT, "about": about, "entries": rows}, indent=1) + "\n",
                    encoding="utf-8")
    load_profile(str(path))  # what was written must load
    return path


def measured_entry(policy: str, hardware: str, batch_size: int, wall_ms: Sequence[float], source: str) -> ProfileEntry:
    """A profile row from measured call times: the mean, and the p95 when a log-normal can carry both."""
    x = np.asarray(wall_ms, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x) & (x > 0)):
        raise ValueError("measured call times must be a non-empty list of finite numbers > 0")
    mean, p95 = float(x.mean()), float(np.percentile(x, 95))
    try:
        lognormal_params(mean, p95)
    except ValueError:
        p95 = None  # too little or too much spread for a log-normal with this mean: fixed at the mean
    return ProfileEntry(policy, hardware, int(batch_size), mean, source, p95, note=f"{x.size} calls")


def profile_entry(entries: list[ProfileEntry], policy: str, hardware: str, batch_size: int = 1) -> ProfileEntry:
    """The row for ``policy`` x ``hardware`` x ``batch_size``; the error lists the rows there are."""
    for e in entries:
        if (e.policy, e.hardware, e.batch_size) == (policy, hardware, batch_size):
            return e
    rows = ", ".join(f"{e.policy}/{e.hardware}/B={e.batch_size}" for e in entries)
    raise ValueError(f"latency profile has no row for policy={policy!r} hardware={hardware!r} "
                     f"batch_size={batch_size}; rows: {rows}")


def profile_source(entry: ProfileEntry, seed: int = 0) -> LatencySource:
    """A profile row as a source: fixed at ``ms``, or log-normal when it gives a ``p95_ms``."""
    if entry.p95_ms is None or entry.p95_ms == entry.ms:
        return FixedLatency(entry.ms)
    return LogNormalLatency(entry.ms, entry.p95_ms, seed)
