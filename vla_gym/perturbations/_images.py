"""Base class of the wrappers that corrupt ``obs["images"]`` (noise, blur, JPEG)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vla_gym.perturbations._common import check_strength, episode_rng, episode_seed


class ImageCorruption(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Apply :meth:`corrupt` to every camera image of each observation, on fresh arrays.

    The env's cached frames (also used by ``render()`` for videos) are never modified in
    place. The RNG is re-seeded from the episode seed on every reset.
    """

    salt = "image"

    def __init__(self, env: gym.Env, strength: float) -> None:
        gym.ObservationWrapper.__init__(self, env)
        self.strength = check_strength(strength)
        self.rng = episode_rng(None, self.salt)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the env, then seed this episode's corruption from its seed."""
        obs, info = self.env.reset(seed=seed, options=options)
        self.rng = episode_rng(episode_seed(self.env, seed), self.salt)
        self.on_episode_start()
        return self.observation(obs), info

    def on_episode_start(self) -> None:
        """Draw per-episode parameters (e.g. a blur direction) from :attr:`rng`."""

    def active(self) -> bool:
        """Whether this wrapper changes pixels at all (False means exact identity)."""
        return self.strength > 0

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        """Corrupt each camera image; return a new dict (other keys shared)."""
        if not self.active():
            return observation
        out = dict(observation)
        out["images"] = {cam: self.corrupt(np.asarray(img)) for cam, img in observation["images"].items()}
        return out

    def corrupt(self, image: np.ndarray) -> np.ndarray:
        """Return a corrupted copy of one ``(H, W, 3)`` uint8 image."""
        raise NotImplementedError
