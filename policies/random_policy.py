"""Uniform random actions: a floor for success rates and a smoke test for the runner."""

from __future__ import annotations

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


class RandomPolicy(Policy):
    """Sample actions uniformly from [-scale, scale]^7; one RNG per env, seeded by :meth:`reset`.

    An env's RNG is seeded with its episode seed at reset (or ``seed + env_id`` before any
    reset), so its actions do not depend on which other envs share the batch.

    Args:
        chunk_size: Length T of each returned chunk.
        scale: Half-width of the uniform distribution (1.0 = the full action box).
        seed: Seed used until the runner reseeds at each episode.
        cameras: Cameras to request anyway (ignored by the policy): measures rendering cost
            and shows the views in videos, as a camera-based policy would.
        image_size: Side of those camera images.
    """

    batch_wait_ms = 0.0  # one RNG draw per env: parallel envs never wait to share a call

    def __init__(self, chunk_size: int = 1, scale: float = 1.0, seed: int = 0, action_dim: int = 7,
                 cameras: tuple[str, ...] | list[str] = (), image_size: int = 224) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.chunk_size = chunk_size
        self.scale = scale
        self.action_dim = action_dim
        self.seed = seed
        self._rngs: dict[int, np.random.Generator] = {}
        self.inputs = PolicyInputs(cameras=tuple(cameras), image_size=image_size)
        self.execution = ChunkExecution(mode="open_loop", replan_steps=None)

    def reset(self, env_ids: Sequence[int] | None = None, seeds: Sequence[int | None] | None = None) -> None:
        """Re-seed the action generator of ``env_ids`` (all when None)."""
        if env_ids is None:
            self._rngs.clear()
        for env_id, seed in reset_targets(env_ids, seeds):
            self._rngs[env_id] = np.random.default_rng(self.seed + env_id if seed is None else seed)

    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None) -> ActionChunk:
        """Uniform random actions in [-1, 1], ``(B, chunk_size, action_dim)``."""
        ids = resolve_env_ids(observations, env_ids)
        shape = (self.chunk_size, self.action_dim)
        rows = []
        for env_id in ids:
            rng = self._rngs.setdefault(env_id, np.random.default_rng(self.seed + env_id))
            rows.append(rng.uniform(-self.scale, self.scale, shape))
        return ActionChunk(np.stack(rows).astype(np.float32))

    def info(self) -> PolicyInfo:
        """Name and chunk size."""
        return PolicyInfo(name="random", chunk_size=self.chunk_size)
