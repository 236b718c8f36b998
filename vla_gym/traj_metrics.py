"""Trajectory-quality metrics of one episode, from its per-step record (every timing mode).

Success alone hides what latency does: a stop-and-go arm may still succeed, later and jerkier.
Definitions and units are in docs/how-to/real-time.md; each function takes plain arrays so it can be
checked on hand-built trajectories, and :func:`episode_metrics` reads the columns the runner
records (:mod:`vla_gym.trajectory`, plus the execution-timing columns listed there).

Conventions: ``T`` executed steps, control period ``dt`` seconds (0.05 at 20 Hz);
end-effector positions ``p`` have ``T + 1`` rows (before step 0, then after each step);
actions have ``T`` rows; action distances use the six arm dims (translation and rotation
deltas, normalised units), since the gripper command is a discrete open/close switch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

ARM_DIMS = slice(0, 6)
IDLE_SPEED = 0.005
"""m/s: below this end-effector speed a step counts as idle (0.25 mm per 50 ms step)."""
OSCILLATION_SPEED = 0.01
"""m/s: velocity samples slower than this along an axis are ignored when counting reversals."""
NAN = float("nan")


def _positions(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"end-effector positions must have shape (T+1, 3), got {p.shape}")
    return p


def _check_dt(dt: float) -> float:
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"control period dt must be > 0 s, got {dt!r}")
    return float(dt)


def completion(success: np.ndarray, dt: float) -> tuple[int, float]:
    """(steps, seconds) until the first successful step, inclusive; the whole episode if none.

    Simulated time: hold steps (blocking waits) count like any other step.
    """
    success = np.asarray(success, dtype=bool)
    hits = np.flatnonzero(success)
    steps = int(hits[0]) + 1 if hits.size else int(success.size)
    return steps, steps * _check_dt(dt)


def path_length(p: np.ndarray) -> float:
    """Metres travelled by the end effector: the sum of ``|p_{k+1} - p_k|``."""
    p = _positions(p)
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) if len(p) > 1 else 0.0


def path_efficiency(p: np.ndarray) -> float:
    """Straight-line distance start -> end over the path length: 1 for a straight line; NaN if still."""
    p = _positions(p)
    length = path_length(p)
    return float(np.linalg.norm(p[-1] - p[0]) / length) if length > 0 else NAN


def jerk_rms(p: np.ndarray, dt: float) -> float:
    """RMS of the third derivative of position (m/s^3), by third differences ``Δ³p / dt³``; NaN if < 4 rows."""
    p, dt = _positions(p), _check_dt(dt)
    if len(p) < 4:
        return NAN
    j = np.diff(p, n=3, axis=0) / dt ** 3
    return float(np.sqrt(np.mean(np.sum(j ** 2, axis=1))))


def action_smoothness(actions: np.ndarray, dims: slice = ARM_DIMS) -> float:
    """Mean ``|a_t - a_{t-1}|`` (L2 over ``dims``) of consecutive executed actions; NaN if < 2."""
    a = np.asarray(actions, dtype=np.float64)[:, dims]
    return float(np.linalg.norm(np.diff(a, axis=0), axis=1).mean()) if len(a) > 1 else NAN


def chunk_boundary_jumps(actions: np.ndarray, chunk_start: np.ndarray, hold: np.ndarray | None = None,
                         dims: slice = ARM_DIMS) -> np.ndarray:
    """``|first action of a new chunk - last executed action of the chunk before|`` at each chunk start.

    Hold steps between the two (blocking waits, async gaps) are skipped: the jump is between
    the chunks' actions. The episode's first chunk has no predecessor and gives no jump.
    """
    a = np.asarray(actions, dtype=np.float64)[:, dims]
    start = np.asarray(chunk_start, dtype=bool)
    held = np.zeros(len(a), bool) if hold is None else np.asarray(hold, dtype=bool)
    jumps, last = [], None
    for t in range(len(a)):
        if held[t]:
            continue
        if start[t] and last is not None:
            jumps.append(np.linalg.norm(a[t] - a[last]))
        last = t
    return np.asarray(jumps, dtype=np.float64)


def _velocities(p: np.ndarray, dt: float) -> np.ndarray:
    return np.diff(_positions(p), axis=0) / _check_dt(dt)


def oscillation_rate(p: np.ndarray, dt: float, threshold: float = OSCILLATION_SPEED) -> float:
    """End-effector velocity sign reversals per second, summed over x, y, z.

    Per axis, only velocity samples faster than ``threshold`` (m/s) count, and a reversal is a
    sign change between consecutive counted samples (so a pause between two moves the same way
    is not one, and sensor-level jitter is ignored). Divided by the episode's duration ``T dt``.
    """
    v = _velocities(p, dt)
    if len(v) == 0:
        return NAN
    reversals = 0
    for axis in range(3):
        s = np.sign(v[np.abs(v[:, axis]) > threshold, axis])
        reversals += int(np.count_nonzero(s[1:] != s[:-1]))
    return reversals / (len(v) * dt)


def idle_fraction(p: np.ndarray, dt: float, threshold: float = IDLE_SPEED) -> float:
    """Fraction of steps whose end-effector speed ``|p_{k+1} - p_k| / dt`` is below ``threshold`` (m/s)."""
    v = _velocities(p, dt)
    return float(np.mean(np.linalg.norm(v, axis=1) < threshold)) if len(v) else NAN


def actuator_effort(forces: np.ndarray, dt: float) -> float:
    """``sum_t sum_j f_{t,j}^2 dt`` over the recorded actuator forces (N^2 s, or (N m)^2 s for torques)."""
    f = np.asarray(forces, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"actuator forces must have shape (T, num_actuators), got {f.shape}")
    return float(np.sum(f ** 2) * _check_dt(dt))


def inference_stats(query: np.ndarray, latency_ms: np.ndarray | None = None, stale: np.ndarray | None = None,
                    hold: np.ndarray | None = None) -> dict[str, Any]:
    """Queries, mean / p95 simulated latency (ms), stale actions skipped and hold steps."""
    q = np.asarray(query, dtype=bool)
    out: dict[str, Any] = {"queries": int(q.sum())}
    lat = None if latency_ms is None else np.asarray(latency_ms, dtype=np.float64)[q]
    lat = lat[np.isfinite(lat)] if lat is not None else None
    out["latency_ms_mean"] = float(lat.mean()) if lat is not None and lat.size else NAN
    out["latency_ms_p95"] = float(np.percentile(lat, 95)) if lat is not None and lat.size else NAN
    out["stale_skipped"] = int(np.asarray(stale).sum()) if stale is not None else 0
    out["hold_steps"] = int(np.asarray(hold, dtype=bool).sum()) if hold is not None else 0
    return out


def eef_positions(traj: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """End-effector positions: the ``eef_pos`` column (true sim state) if recorded, else ``state[:, :3]``."""
    if "eef_pos" in traj:
        return np.asarray(traj["eef_pos"], dtype=np.float64)
    state = traj.get("state")
    if state is None or len(state) == 0:
        return None
    return np.asarray(state, dtype=np.float64)[:, :3]


def _plain(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def episode_metrics(traj: Mapping[str, np.ndarray], dt: float = 0.05, *, idle_speed: float = IDLE_SPEED,
                    oscillation_speed: float = OSCILLATION_SPEED) -> dict[str, Any]:
    """All metrics of one recorded episode, JSON-ready (``None`` where undefined or not recorded).

    Reads ``action``, ``success``, ``state`` (or ``eef_pos``), ``query`` and, when present,
    ``latency_ms``, ``stale``, ``hold``, ``chunk_start``, ``actuator_force``.
    """
    actions = np.asarray(traj["action"], dtype=np.float64)
    T = len(actions)
    success = np.asarray(traj.get("success", np.zeros(T, bool)), dtype=bool)
    steps, seconds = completion(success, dt)
    m: dict[str, Any] = {"completion_steps": steps, "completion_time_s": seconds}
    p = eef_positions(traj)
    if p is not None and len(p) == T + 1:
        m.update(path_length_m=path_length(p), path_efficiency=path_efficiency(p), jerk_rms=jerk_rms(p, dt),
                 oscillation_per_s=oscillation_rate(p, dt, oscillation_speed),
                 idle_fraction=idle_fraction(p, dt, idle_speed))
    else:
        m.update(path_length_m=None, path_efficiency=None, jerk_rms=None, oscillation_per_s=None, idle_fraction=None)
    m["action_smoothness"] = action_smoothness(actions) if T else NAN
    hold = traj.get("hold")
    starts = traj.get("chunk_start", traj.get("query"))
    jumps = chunk_boundary_jumps(actions, starts, hold) if starts is not None and T else np.zeros(0)
    m["chunk_boundary_jump_mean"] = float(jumps.mean()) if jumps.size else NAN
    m["chunk_boundary_jump_max"] = float(jumps.max()) if jumps.size else NAN
    forces = traj.get("actuator_force")
    m["actuator_effort"] = actuator_effort(forces, dt) if forces is not None and len(forces) else None
    m.update(inference_stats(traj.get("query", np.zeros(T, bool)), traj.get("latency_ms"), traj.get("stale"), hold))
    return {k: _plain(v) for k, v in m.items()}
