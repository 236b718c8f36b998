"""DynamicsProbe reads the true end-effector position and the arm's actuator forces (robosuite Lift)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import vla_gym  # noqa: F401
from vla_gym.dynamics_probe import DynamicsProbe, probe


def test_probe_matches_the_observed_eef_position_and_reads_torques():
    env = DynamicsProbe(gym.make("vla_gym/Lift", cameras=(), image_size=64))
    try:
        obs, info = env.reset(seed=0)
        np.testing.assert_allclose(info["eef_pos"], obs["state"][:3], atol=1e-6)
        up = np.zeros(7, np.float32)
        up[2] = 1.0  # 5 cm up per step
        for _ in range(3):
            obs, _, _, _, info = env.step(up)
        np.testing.assert_allclose(info["eef_pos"], obs["state"][:3], atol=1e-6)
        assert info["actuator_force"].shape == (7,) and np.all(np.isfinite(info["actuator_force"]))
        assert np.abs(info["actuator_force"]).max() > 0.1  # holding the arm up against gravity takes torque
    finally:
        env.close()


def test_probe_refuses_a_non_simulator_env():
    with pytest.raises(TypeError, match="not a robosuite-backed"):
        probe(gym.make("CartPole-v1"))
