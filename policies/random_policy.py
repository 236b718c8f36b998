"""Uniform random actions: a floor for success rates and a smoke test for the runner."""

from __future__ import annotations

import numpy as np

from vla_gym.policy import Observation, Policy, PolicyInfo, PolicyInputs


class RandomPolicy(Policy):
    """Sample actions uniformly from [-scale, scale]^7; seeded by :meth:`reset`.

    Args:
        chunk_size: Length T of each returned chunk.
        scale: Half-width of the uniform distribution (1.0 = the full action box).
        seed: Seed used until the runner reseeds at each episode.
        cameras: Cameras to request anyway (ignored by the policy): measures rendering cost
            and shows the views in videos, as a camera-based policy would.
        image_size: Side of those camera images.
    """

    def __init__(self, chunk_size: int = 1, scale: float = 1.0, seed: int = 0, action_dim: int = 7,
                 cameras: tuple[str, ...] | list[str] = (), image_size: int = 224) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.chunk_size = chunk_size
        self.scale = scale
        self.action_dim = action_dim
        self._rng = np.random.default_rng(seed)
        self.inputs = PolicyInputs(cameras=tuple(cameras), image_size=image_size)

    def reset(self, *, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def act(self, observation: Observation) -> np.ndarray:
        return self._rng.uniform(-self.scale, self.scale, (self.chunk_size, self.action_dim)).astype(np.float32)

    def info(self) -> PolicyInfo:
        return PolicyInfo(name="random", chunk_size=self.chunk_size)
