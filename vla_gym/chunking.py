"""Turning action chunks into one action per env step.

Chunk execution belongs to the runner, not to each adapter (STYLE.md: LeRobot's per-policy
action queues leaked stale actions across episodes). Both executors wrap a :class:`Policy`,
call it only when they need a new chunk, and forget everything on :meth:`reset`.

- :class:`OpenLoopExecutor` executes the first ``replan_steps`` actions of each chunk, then
  asks again (OpenVLA-OFT: 8 of 8; openpi LIBERO: 5 of 50; OpenVLA: 1 of 1).
- :class:`TemporalEnsembleExecutor` asks every step and averages all predictions made for the
  current step with weights ``exp(-k * i)``, ``i = 0`` for the oldest (ACT / TinyVLA,
  ``k = 0.01``).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from vla_gym.policy import Observation, Policy, as_chunk


class OpenLoopExecutor:
    """Execute ``replan_steps`` actions of each chunk open-loop before re-querying."""

    def __init__(self, policy: Policy, replan_steps: int | None = None) -> None:
        if replan_steps is not None and replan_steps < 1:
            raise ValueError(f"replan_steps must be >= 1 (or null for the whole chunk), got {replan_steps}")
        self.policy = policy
        self.replan_steps = replan_steps
        self._plan: deque[np.ndarray] = deque()
        self.num_queries = 0

    def reset(self, *, seed: int | None = None) -> None:
        """Drop any queued actions and reset the wrapped policy."""
        self._plan.clear()
        self.policy.reset(seed=seed)

    def step(self, observation: Observation) -> np.ndarray:
        """Return the action for this env step, querying the policy when the plan is empty."""
        if not self._plan:
            chunk = as_chunk(self.policy.act(observation))
            n = len(chunk) if self.replan_steps is None else min(self.replan_steps, len(chunk))
            self._plan.extend(chunk[:n])
            self.num_queries += 1
        return self._plan.popleft()


class TemporalEnsembleExecutor:
    """Query every step; average overlapping chunk predictions with exponential weights."""

    def __init__(self, policy: Policy, k: float = 0.01) -> None:
        if k < 0:
            raise ValueError(f"temporal ensembling k must be >= 0, got {k}")
        self.policy = policy
        self.k = k
        self._chunks: list[tuple[int, np.ndarray]] = []  # (start step, chunk)
        self._t = 0
        self.num_queries = 0

    def reset(self, *, seed: int | None = None) -> None:
        """Forget all past chunks and reset the wrapped policy."""
        self._chunks.clear()
        self._t = 0
        self.policy.reset(seed=seed)

    def step(self, observation: Observation) -> np.ndarray:
        """Query the policy and return the weighted average of all predictions for now."""
        chunk = as_chunk(self.policy.act(observation))
        self.num_queries += 1
        self._chunks.append((self._t, chunk))
        # keep only chunks that still cover the current step; oldest first
        self._chunks = [(s, c) for s, c in self._chunks if s + len(c) > self._t]
        preds = np.stack([c[self._t - s] for s, c in self._chunks])
        weights = np.exp(-self.k * np.arange(len(preds)))
        weights /= weights.sum()
        self._t += 1
        return (weights[:, None] * preds).sum(axis=0).astype(np.float32)


def make_executor(policy: Policy, mode: str = "open_loop", replan_steps: int | None = None, k: float = 0.01):
    """Build the executor named by the config (``open_loop`` or ``temporal_ensemble``)."""
    if mode == "open_loop":
        return OpenLoopExecutor(policy, replan_steps)
    if mode == "temporal_ensemble":
        return TemporalEnsembleExecutor(policy, k)
    raise ValueError(f"unknown chunk execution mode {mode!r}; valid: 'open_loop', 'temporal_ensemble'")
