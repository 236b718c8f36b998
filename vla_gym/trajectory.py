"""Optional per-step trajectory records: one compressed ``.npz`` per episode (``trajectory.enabled``).

Columns (``T`` = steps executed; one row per step unless noted)::

    action      float32 (T, 7)   the action executed at step t (after chunk execution)
    query       bool    (T,)     True where step t's action came from a fresh policy call
    reward      float32 (T,)
    success     bool    (T,)     the env's is_success after step t
    state       float32 (T+1, 8) proprioceptive state before step t, then after the last step
    joint_pos   float32 (T+1, 7) joint positions, likewise

Execution timing (:mod:`vla_gym.timing`, every timing mode; docs/how-to/real-time.md)::

    latency_ms     float64 (T,)     simulated latency of the query issued at step t (NaN: none)
    delay_steps    int16   (T,)     its delay d in control steps (-1: none)
    hold           bool    (T,)     the executed action was the hold (nothing executable)
    chunk_start    bool    (T,)     first executed action of a newly arrived chunk
    stale          int16   (T,)     actions of a chunk arriving at step t skipped as past

From the simulator (:class:`vla_gym.dynamics_probe.DynamicsProbe`; absent for envs without one)::

    eef_pos        float64 (T+1, 3) true end-effector position before step t, then after the last
    actuator_force float32 (T, 7)   the arm's actuator forces after step t

Recorded in the parent from the observations the policy saw and the actions sent, so the
in-process runner and the env workers (``num_envs > 1``) write the same files. For
sim-to-real analysis: replay ``action`` on a robot, compare ``state``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


TIMING_COLUMNS: dict[str, Any] = {"latency_ms": np.float64, "delay_steps": np.int16, "hold": bool,
                                  "chunk_start": bool, "stale": np.int16}
"""The per-step execution-timing columns (fields of :class:`vla_gym.timing.StepRecord`) and their dtypes."""


def trajectory_rel(task_name: str, episode_index: int) -> str:
    """Path of an episode's trajectory file inside the run directory."""
    return f"trajectories/{task_name}/ep{episode_index:03d}.npz"


class Trajectory:
    """Columns of one episode, filled step by step."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {k: [] for k in ("action", "query", "reward", "success", "state",
                                                           "joint_pos", *TIMING_COLUMNS, "eef_pos",
                                                           "actuator_force")}

    def observe(self, obs: dict[str, Any], info: dict[str, Any] | None = None) -> None:
        """The observation (and the env's ``info``) at the start of the episode or after a step."""
        for k in ("state", "joint_pos"):
            if k in obs:
                self.cols[k].append(np.asarray(obs[k], dtype=np.float32))
        if info is not None and "eef_pos" in info:
            self.cols["eef_pos"].append(np.asarray(info["eef_pos"], dtype=np.float64))

    def step(self, action: np.ndarray, queried: bool, reward: float, success: bool, obs: dict[str, Any],
             info: dict[str, Any] | None = None, timing: Any = None) -> None:
        """One executed step: its action, whether the policy was queried for it, and what came back.

        ``timing`` is the step's :class:`vla_gym.timing.StepRecord` (None: not recorded).
        """
        self.cols["action"].append(np.asarray(action, dtype=np.float32))
        self.cols["query"].append(bool(queried))
        self.cols["reward"].append(float(reward))
        self.cols["success"].append(bool(success))
        if timing is not None:
            for k in TIMING_COLUMNS:
                self.cols[k].append(getattr(timing, k))
        if info is not None and "actuator_force" in info:
            self.cols["actuator_force"].append(np.asarray(info["actuator_force"], dtype=np.float32))
        self.observe(obs, info)

    def arrays(self) -> dict[str, np.ndarray]:
        """The recorded columns as arrays (``action``, ``query``, ``reward``, ``success``, ``state``, ``joint_pos``)."""
        dtypes = {"action": np.float32, "query": bool, "reward": np.float32, "success": bool,
                  "state": np.float32, "joint_pos": np.float32, **TIMING_COLUMNS, "eef_pos": np.float64,
                  "actuator_force": np.float32}
        out = {}
        for k, v in self.cols.items():
            if k in TIMING_COLUMNS or k in ("eef_pos", "actuator_force"):
                if v:  # recorded only when the loop / the env provides them
                    out[k] = np.asarray(v, dtype=dtypes[k])
                continue
            if k in ("action", "state", "joint_pos") and not v:
                out[k] = np.zeros((0, 7 if k != "state" else 8), dtype=np.float32)
            else:
                out[k] = np.asarray(v, dtype=dtypes[k])
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the columns as a compressed ``.npz``, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez_compressed(tmp, **self.arrays())
        os.replace(tmp, path)
        return path
