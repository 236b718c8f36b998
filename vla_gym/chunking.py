"""Turning action chunks into one action per env step, per env.

Chunk execution belongs to the runner, not to each adapter (STYLE.md: LeRobot's per-policy
action queues leaked stale actions across episodes). An executor holds one env's queued or
overlapping predictions and is reset at that env's episode start; :class:`ChunkedActor` holds
one executor per env and calls the policy once per step for all the envs that need a chunk.

- :class:`OpenLoopExecutor` executes the first ``replan_steps`` actions of each chunk, then
  asks again (OpenVLA-OFT: 8 of 8; openpi LIBERO: 5 of 50; OpenVLA: 1 of 1).
- :class:`TemporalEnsembleExecutor` asks every step and averages all predictions made for the
  current step with weights ``exp(-k * i)``, ``i = 0`` for the oldest (ACT / TinyVLA,
  ``k = 0.01``).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Mapping

import numpy as np

from vla_gym.policy import CHUNK_MODES, ActionChunk, Observation, Policy, as_chunk


class OpenLoopExecutor:
    """One env's plan: execute ``replan_steps`` actions of each chunk before asking again."""

    def __init__(self, replan_steps: int | None = None) -> None:
        if replan_steps is not None and replan_steps < 1:
            raise ValueError(f"replan_steps must be >= 1 (or null for the whole chunk), got {replan_steps}")
        self.replan_steps = replan_steps
        self._plan: deque[np.ndarray] = deque()

    def reset(self) -> None:
        """Drop any queued actions (episode start)."""
        self._plan.clear()

    @property
    def needs_chunk(self) -> bool:
        """Whether the queue is empty, so the policy must be queried this step."""
        return not self._plan

    def add_chunk(self, chunk: np.ndarray) -> None:
        """Queue the first ``replan_steps`` actions of ``chunk`` (all when None)."""
        chunk = as_chunk(chunk)
        n = len(chunk) if self.replan_steps is None else min(self.replan_steps, len(chunk))
        self._plan.extend(chunk[:n])

    def next_action(self) -> np.ndarray:
        """Pop the next queued action."""
        if not self._plan:
            raise RuntimeError("no action queued: add a chunk first (needs_chunk is True)")
        return self._plan.popleft()


class TemporalEnsembleExecutor:
    """One env's ensemble: a chunk every step, overlapping predictions averaged with ``exp(-k i)``."""

    def __init__(self, k: float = 0.01) -> None:
        if k < 0:
            raise ValueError(f"temporal ensembling k must be >= 0, got {k}")
        self.k = k
        self._chunks: list[tuple[int, np.ndarray]] = []  # (start step, chunk)
        self._t = 0
        self._fresh = False

    def reset(self) -> None:
        """Forget all past chunks (episode start)."""
        self._chunks.clear()
        self._t = 0
        self._fresh = False

    @property
    def needs_chunk(self) -> bool:
        """Whether this step's chunk is still missing (temporal ensembling queries every step)."""
        return not self._fresh

    def add_chunk(self, chunk: np.ndarray) -> None:
        """Add this step's chunk to the predictions being averaged."""
        self._chunks.append((self._t, as_chunk(chunk)))
        self._fresh = True

    def next_action(self) -> np.ndarray:
        """The weighted average of every prediction for this step; advances one step."""
        if not self._fresh:
            raise RuntimeError("temporal ensembling needs this step's chunk first (needs_chunk is True)")
        # keep only chunks that still cover the current step; oldest first
        self._chunks = [(s, c) for s, c in self._chunks if s + len(c) > self._t]
        preds = np.stack([c[self._t - s] for s, c in self._chunks])
        weights = np.exp(-self.k * np.arange(len(preds)))
        weights /= weights.sum()
        self._t += 1
        self._fresh = False
        return (weights[:, None] * preds).sum(axis=0).astype(np.float32)


Executor = OpenLoopExecutor | TemporalEnsembleExecutor


def make_executor(mode: str = "open_loop", replan_steps: int | None = None, k: float = 0.01) -> Executor:
    """Build the executor named by the config (``open_loop`` or ``temporal_ensemble``)."""
    if mode == "open_loop":
        return OpenLoopExecutor(replan_steps)
    if mode == "temporal_ensemble":
        return TemporalEnsembleExecutor(k)
    raise ValueError(f"unknown chunk execution mode {mode!r}; valid: {', '.join(repr(m) for m in CHUNK_MODES)}")


def call_policy(policy: Policy, observations: Mapping[int, Observation], need: list[int],
                **kwargs: Any) -> tuple[ActionChunk, float]:
    """One batched ``act`` for the envs in ``need``, checked (an ActionChunk, one chunk per env), and its wall ms."""
    t0 = time.perf_counter()
    result = policy.act([observations[i] for i in need], env_ids=need, **kwargs)
    wall_ms = 1e3 * (time.perf_counter() - t0)
    if not isinstance(result, ActionChunk):
        raise TypeError(f"{type(policy).__name__}.act must return an ActionChunk, got {type(result).__name__}")
    if result.batch_size != len(need):
        raise ValueError(f"policy returned {result.batch_size} chunks for {len(need)} observations")
    return result, wall_ms


class ChunkedActor:
    """A policy with one executor per env: one batched ``act`` per step for the envs that need it.

    Args:
        policy: The (batch-first) policy.
        num_envs: How many envs (ids ``0..num_envs-1``) it serves.
        mode: Chunk execution mode, as in :func:`make_executor`.
        replan_steps: Actions executed per chunk (open loop), as in :func:`make_executor`.
        k: Temporal-ensemble weight, as in :func:`make_executor`.
    """

    def __init__(self, policy: Policy, num_envs: int = 1, mode: str = "open_loop",
                 replan_steps: int | None = None, k: float = 0.01) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.policy = policy
        self.executors = [make_executor(mode, replan_steps, k) for _ in range(num_envs)]
        self.num_queries = [0] * num_envs
        self.last_call: dict[str, Any] | None = None
        """``env_ids``, ``wall_ms`` and the policy's ``info`` of the latest act call (None if none this step)."""

    def reset(self, env_ids: list[int] | None = None, seeds: list[int | None] | None = None,
              tasks: list[str | None] | None = None, episode_indices: list[int | None] | None = None) -> None:
        """Episode start of ``env_ids`` (all when None): drop their plans, reset the policy for them.

        ``tasks`` and ``episode_indices`` are unused here (the timed actor's latency sources read them).
        """
        ids = range(len(self.executors)) if env_ids is None else env_ids
        for i in ids:
            self.executors[i].reset()
            self.num_queries[i] = 0
        self.policy.reset(env_ids=None if env_ids is None else list(env_ids), seeds=seeds)

    def step(self, observations: Mapping[int, Observation]) -> dict[int, np.ndarray]:
        """One action per env in ``observations`` (env id -> its current observation)."""
        need = [i for i in observations if self.executors[i].needs_chunk]
        self.last_call = None
        if need:
            result, wall_ms = call_policy(self.policy, observations, need)
            for row, i in enumerate(need):
                self.executors[i].add_chunk(result.actions[row])
                self.num_queries[i] += 1
            self.last_call = {"env_ids": need, "wall_ms": wall_ms, "info": result.info}
        return {i: self.executors[i].next_action() for i in observations}
