"""Play back recorded actions (from a file or a previous run's episode record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from typing import Sequence

from vla_gym.policy import (
    ActionChunk,
    ChunkExecution,
    Observation,
    Policy,
    PolicyInfo,
    PolicyInputs,
    reset_targets,
    resolve_env_ids,
)


class ReplayPolicy(Policy):
    """Return recorded actions one per call and env, each env restarting at its :meth:`reset`.

    Args:
        actions: Path to a ``.npy`` file of shape (N, 7), or an (N, 7) array.
        hold_last: After the recording ends, keep returning the last action (True) or raise.
    """

    inputs = PolicyInputs(cameras=())
    execution = ChunkExecution(mode="open_loop", replan_steps=1)
    batch_wait_ms = 0.0  # a table lookup: parallel envs never wait to share a call

    def __init__(self, actions: str | np.ndarray, hold_last: bool = True) -> None:
        if isinstance(actions, (str, Path)):
            path = Path(actions)
            if not path.is_file():
                raise FileNotFoundError(f"replay actions file not found: {path} (expected an (N, 7) .npy array)")
            actions = np.load(path, allow_pickle=False)
        self.actions = np.asarray(actions, dtype=np.float32)
        if self.actions.ndim != 2 or len(self.actions) == 0:
            raise ValueError(f"replay actions must have shape (N, D) with N >= 1, got {self.actions.shape}")
        self.hold_last = hold_last
        self._cursor: dict[int, int] = {}

    def reset(self, env_ids: Sequence[int] | None = None, seeds: Sequence[int | None] | None = None) -> None:
        """Rewind the replay cursor of ``env_ids`` (all when None)."""
        if env_ids is None:
            self._cursor.clear()
        for env_id, _ in reset_targets(env_ids, seeds):
            self._cursor[env_id] = 0

    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None) -> ActionChunk:
        """The next recorded action of each env (a one-step chunk)."""
        ids = resolve_env_ids(observations, env_ids)
        rows = []
        for env_id in ids:
            t = self._cursor.get(env_id, 0)
            if t >= len(self.actions) and not self.hold_last:
                raise IndexError(f"replay ran out of actions after {len(self.actions)} steps (env {env_id})")
            rows.append(self.actions[min(t, len(self.actions) - 1)])
            self._cursor[env_id] = t + 1
        return ActionChunk(np.stack(rows)[:, None, :])

    def info(self) -> PolicyInfo:
        """Name and action dimension."""
        return PolicyInfo(name="replay", action_dim=int(self.actions.shape[1]))
