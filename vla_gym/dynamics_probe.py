"""Read what the trajectory-quality metrics need from the simulator, beside the observation.

The observed ``state`` may be perturbed (sensor noise, observation latency), and actuator forces
are not part of any observation, so :class:`DynamicsProbe` adds the true values to ``info``
after every reset and step: ``eef_pos`` (m, the grip site, float64) and ``actuator_force`` (the
arm's joint actuators, N m for the Panda, float32; MuJoCo's ``actuator_force`` after the last
physics sub-step of the control step).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def probe(env: gym.Env) -> dict[str, np.ndarray]:
    """``eef_pos`` and ``actuator_force`` of the first robot of a vla_gym (robosuite-backed) env."""
    sim_env = getattr(env.unwrapped, "sim_env", None)
    if sim_env is None or not getattr(sim_env, "robots", None):
        raise TypeError(f"{type(env.unwrapped).__name__} is not a robosuite-backed vla_gym env")
    robot = sim_env.robots[0]
    data = robot.sim.data
    return {"eef_pos": np.array(data.site_xpos[robot.eef_site_id], dtype=np.float64),
            "actuator_force": np.array(data.actuator_force[robot._ref_joint_actuator_indexes], dtype=np.float32)}


class DynamicsProbe(gym.Wrapper):
    """Adds ``info["eef_pos"]`` and ``info["actuator_force"]`` (see the module docstring)."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the wrapped env; ``info`` gains the probe's end-effector position and actuator forces."""
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, **probe(self.env)}

    def step(self, action: np.ndarray):
        """Step the wrapped env; ``info`` gains the probe's end-effector position and actuator forces."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, **probe(self.env)}
