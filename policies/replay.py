"""Play back recorded actions (from a file or a previous run's episode record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_gym.policy import Observation, Policy, PolicyInfo, PolicyInputs


class ReplayPolicy(Policy):
    """Return recorded actions one per call, restarting at every :meth:`reset`.

    Args:
        actions: Path to a ``.npy`` file of shape (N, 7), or an (N, 7) array.
        hold_last: After the recording ends, keep returning the last action (True) or raise.
    """

    inputs = PolicyInputs(cameras=())

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
        self._t = 0

    def reset(self, *, seed: int | None = None) -> None:
        self._t = 0

    def act(self, observation: Observation) -> np.ndarray:
        if self._t >= len(self.actions):
            if not self.hold_last:
                raise IndexError(f"replay ran out of actions after {len(self.actions)} steps")
            return self.actions[-1:].copy()
        action = self.actions[self._t : self._t + 1].copy()
        self._t += 1
        return action

    def info(self) -> PolicyInfo:
        return PolicyInfo(name="replay", action_dim=int(self.actions.shape[1]))
