"""Actuation noise: Gaussian noise on the commanded action (not in LIBERO-plus)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vla_gym.perturbations._common import check_positive, check_strength, episode_rng, episode_seed


class ActionNoise(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Add ``N(0, (s * max_std)^2)`` to the 6 arm dims of each action, then clip to [-1, 1].

    Default ``max_std`` 0.1 action units at strength 1, i.e. 5 mm and 0.05 rad per 20 Hz step
    under OSC_POSE (``a[:3]`` = +/-1 <-> +/-5 cm). The gripper dim is left alone unless
    ``noise_gripper``. Noise is drawn from the episode seed; the executed action is reported
    in ``info["executed_action"]``.

    Args:
        env: A vla_gym env (7-D actions).
        strength: In [0, 1]; 0 passes actions through unchanged.
        max_std: Noise standard deviation at strength 1, action units.
        noise_gripper: Also perturb the gripper command.

    Examples:
        >>> import gymnasium as gym, numpy as np, vla_gym
        >>> from vla_gym.perturbations import ActionNoise
        >>> env = ActionNoise(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=1.0)
        >>> obs, info = env.reset(seed=0)
        >>> obs, r, term, trunc, info = env.step(np.zeros(7, dtype=np.float32))
        >>> bool(np.any(info["executed_action"][:6] != 0))
        True
        >>> env.close()
    """

    salt = "action_noise"

    def __init__(self, env: gym.Env, strength: float, max_std: float = 0.1, noise_gripper: bool = False) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, max_std=max_std, noise_gripper=noise_gripper)
        gym.ActionWrapper.__init__(self, env)
        self.strength = check_strength(strength)
        self.max_std = check_positive("max_std", max_std)
        self.noise_gripper = bool(noise_gripper)
        self.rng = episode_rng(None, self.salt)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset and seed this episode's noise."""
        obs, info = self.env.reset(seed=seed, options=options)
        self.rng = episode_rng(episode_seed(self.env, seed), self.salt)
        return obs, info

    def action(self, action: np.ndarray) -> np.ndarray:
        """The noisy action the env executes."""
        if self.strength == 0:
            return action
        a = np.asarray(action, dtype=np.float32).copy()
        dims = a.shape[-1] if self.noise_gripper else a.shape[-1] - 1
        a[:dims] += self.rng.normal(0.0, self.strength * self.max_std, size=dims).astype(np.float32)
        return np.clip(a, -1.0, 1.0)

    def step(self, action: np.ndarray):
        """Step with the noisy action; report it in ``info["executed_action"]``."""
        executed = self.action(action)
        obs, reward, terminated, truncated, info = self.env.step(executed)
        return obs, reward, terminated, truncated, {**info, "executed_action": np.asarray(executed)}
