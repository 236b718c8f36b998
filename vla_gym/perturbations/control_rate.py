"""Control-rate change: the policy's commands arrive at a different rate (not in LIBERO-plus)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vla_gym.perturbations._common import ModelEditWrapper, check_strength

MODES = ("hold", "period")


class ControlRate(ModelEditWrapper):
    """Change how long each policy command acts, as when a policy runs slower than trained.

    Two modes (the factor is ``n = 1 + round(s * (max_factor - 1))`` for ``hold`` and
    ``f = 1 + s * (max_factor - 1)`` for ``period``; default ``max_factor`` 4):

    - ``hold`` (default): each policy action is executed for ``n`` consecutive 20 Hz control
      steps, so the policy acts at ``20 / n`` Hz (5 Hz at strength 1). Under OSC_POSE delta
      control a held action moves the arm n times as far. Reward is summed over the held steps,
      the episode ends as soon as one of them ends it; ``info["held_steps"]`` says how many ran.
      ``TimeLimit`` counts the inner 20 Hz steps, so the horizon in seconds is unchanged.
    - ``period``: the robosuite control period (``sim_env.control_timestep``, 50 ms) becomes
      ``f`` times longer, i.e. the controller tracks each delta goal for longer (the same as
      building the env with ``control_freq = 20 / f``). Re-applied after every reset (LIBERO
      rebuilds the sim, which resets the period). The horizon in steps is unchanged, so it lasts
      ``f`` times longer in seconds.

    Args:
        env: A vla_gym env.
        strength: In [0, 1]; 0 keeps 20 Hz.
        max_factor: Slow-down factor at strength 1 (>= 1).
        mode: ``hold`` or ``period``.

    Examples:
        >>> import gymnasium as gym, numpy as np, vla_gym
        >>> from vla_gym.perturbations import ControlRate
        >>> env = ControlRate(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=1.0)
        >>> obs, info = env.reset(seed=0)
        >>> env.step(np.zeros(7, dtype=np.float32))[4]["held_steps"]
        4
        >>> env.close()
    """

    salt = "control_rate"

    def __init__(self, env: gym.Env, strength: float, max_factor: float = 4.0, mode: str = "hold") -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, max_factor=max_factor, mode=mode)
        super().__init__(env, strength)
        if mode not in MODES:
            raise ValueError(f"unknown control-rate mode {mode!r}; choose one of {list(MODES)}")
        if not float(max_factor) >= 1.0:
            raise ValueError(f"max_factor must be >= 1 (a slow-down factor), got {max_factor!r}")
        self.mode = mode
        self.max_factor = float(max_factor)
        s = check_strength(strength)
        self.hold_steps = 1 + int(round(s * (self.max_factor - 1))) if mode == "hold" else 1
        self.period_factor = 1.0 + s * (self.max_factor - 1) if mode == "period" else 1.0
        self._nominal_period: float | None = None

    def apply(self, model: Any, rng: np.random.Generator) -> None:
        """In ``period`` mode, lengthen the control period by a whole number of physics steps."""
        if self.mode != "period" or self.period_factor == 1.0:
            return
        sim_env = self._base.sim_env
        self._nominal_period = float(sim_env.control_timestep)
        substeps = max(1, int(round(self._nominal_period * self.period_factor / sim_env.model_timestep)))
        # a hair above the exact multiple so robosuite's int(period / dt) gives `substeps`
        sim_env.control_timestep = substeps * sim_env.model_timestep * (1 + 1e-9)

    def restore_extra(self) -> None:
        """Put the nominal control period back (robosuite tasks keep it across soft resets)."""
        if self._nominal_period is not None:
            self._base.sim_env.control_timestep = self._nominal_period
            self._nominal_period = None

    def step(self, action: np.ndarray):
        """Execute ``action`` for ``hold_steps`` control steps (1 in ``period`` mode)."""
        total, held = 0.0, 0
        for _ in range(self.hold_steps):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            held += 1
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, {**info, "held_steps": held}
