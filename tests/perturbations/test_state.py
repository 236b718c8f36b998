"""Layout, robot-init and dynamics perturbations change the physical state they should."""

from __future__ import annotations

import numpy as np

from tests.perturbations.conftest import make_lift, rollout
from vla_gym import perturbations as P


def test_layout_moves_the_cube_by_exactly_the_mapped_distance(reference):
    env = P.LayoutPerturbation(make_lift(), strength=0.6, max_shift_m=0.05)
    try:
        got = rollout(env, n_steps=1)
    finally:
        env.close()
    shift = got[0]["pose/cube"][:3] - reference[0]["pose/cube"][:3]
    np.testing.assert_allclose(np.linalg.norm(shift[:2]), 0.03, atol=1e-5)
    assert abs(shift[2]) < 1e-5
    np.testing.assert_array_equal(got[0]["joint_pos"], reference[0]["joint_pos"])


def test_robot_init_noise_perturbs_arm_joints_deterministically(reference):
    env = P.RobotInitPerturbation(make_lift(), strength=1.0)
    try:
        a = rollout(env, n_steps=1)
        b = rollout(env, n_steps=1)
    finally:
        env.close()
    d = a[0]["joint_pos"] - reference[0]["joint_pos"]
    assert 0.01 < np.abs(d).max() < 0.5  # std 0.1 rad at strength 1
    np.testing.assert_array_equal(a[0]["joint_pos"], b[0]["joint_pos"])
    np.testing.assert_array_equal(a[0]["pose/cube"], reference[0]["pose/cube"])
    # the reported eef state follows the perturbed joints
    assert np.abs(a[0]["state"][:3] - reference[0]["state"][:3]).max() > 1e-3


def test_dynamics_changes_trajectories_but_not_pixels_at_reset():
    """Push the cube sideways: mass/friction change how it slides; the reset frame is identical."""
    def push_cube(env):
        obs, _ = env.reset(seed=3)
        frame = obs["images"]["agentview"].copy()
        cube = obs["privileged"]["poses"]["cube"][:3]
        eef = obs["state"][:3]
        for _ in range(40):  # go beside the cube at table height, then sweep through it in +y
            target = cube + np.array([0.0, -0.08, 0.0]) if _ < 25 else cube + np.array([0.0, 0.10, 0.0])
            a = np.zeros(7, dtype=np.float32)
            a[:3] = np.clip((target - eef) / 0.05, -1, 1)
            a[6] = 1.0
            obs, *_ = env.step(a)
            eef = obs["state"][:3]
        return frame, obs["privileged"]["poses"]["cube"][:3]

    base = make_lift(cameras=("agentview",))
    heavy = P.DynamicsPerturbation(make_lift(cameras=("agentview",)), strength=0.0, mass_scale=20.0,
                                   friction_scale=3.0)
    try:
        f0, c0 = push_cube(base)
        f1, c1 = push_cube(heavy)
    finally:
        base.close()
        heavy.close()
    np.testing.assert_array_equal(f0, f1)
    assert np.linalg.norm(c0 - c1) > 1e-3
