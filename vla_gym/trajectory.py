"""Optional per-step trajectory records: one compressed ``.npz`` per episode (``trajectory.enabled``).

Columns (``T`` = steps executed; one row per step unless noted)::

    action      float32 (T, 7)   the action executed at step t (after chunk execution)
    query       bool    (T,)     True where step t's action came from a fresh policy call
    reward      float32 (T,)
    success     bool    (T,)     the env's is_success after step t
    state       float32 (T+1, 8) proprioceptive state before step t, then after the last step
    joint_pos   float32 (T+1, 7) joint positions, likewise

Recorded in the parent from the observations the policy saw and the actions sent, so the
in-process runner and the env workers (``num_envs > 1``) write the same files. For
sim-to-real analysis: replay ``action`` on a robot, compare ``state``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def trajectory_rel(task_name: str, episode_index: int) -> str:
    """Path of an episode's trajectory file inside the run directory."""
    return f"trajectories/{task_name}/ep{episode_index:03d}.npz"


class Trajectory:
    """Columns of one episode, filled step by step."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {k: [] for k in ("action", "query", "reward", "success", "state",
                                                           "joint_pos")}

    def observe(self, obs: dict[str, Any]) -> None:
        """The observation at the start of the episode or after a step."""
        for k in ("state", "joint_pos"):
            if k in obs:
                self.cols[k].append(np.asarray(obs[k], dtype=np.float32))

    def step(self, action: np.ndarray, queried: bool, reward: float, success: bool, obs: dict[str, Any]) -> None:
        """One executed step: its action, whether the policy was queried for it, and what came back."""
        self.cols["action"].append(np.asarray(action, dtype=np.float32))
        self.cols["query"].append(bool(queried))
        self.cols["reward"].append(float(reward))
        self.cols["success"].append(bool(success))
        self.observe(obs)

    def arrays(self) -> dict[str, np.ndarray]:
        """The recorded columns as arrays (``action``, ``query``, ``reward``, ``success``, ``state``, ``joint_pos``)."""
        dtypes = {"action": np.float32, "query": bool, "reward": np.float32, "success": bool,
                  "state": np.float32, "joint_pos": np.float32}
        out = {}
        for k, v in self.cols.items():
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
