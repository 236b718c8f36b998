"""Robot initial-state perturbation: noise on the arm's joint angles (LIBERO-plus "robot init")."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vla_gym.perturbations._common import ModelEditWrapper, check_positive, mj_data


class RobotInitPerturbation(ModelEditWrapper):
    """Add Gaussian noise to the arm's 7 joint angles at reset, before the settle steps.

    At strength ``s`` each joint gets ``N(0, (s * max_std_rad)^2)`` (default 0.1 rad, about
    5.7 deg, at strength 1; robosuite's own init noise is 0.02 rad), clipped to the joint
    limits; joint velocities are zeroed and the sim is forwarded. Gripper and objects are
    untouched. The OSC controller tracks from wherever the arm starts.

    Args:
        env: A vla_gym env.
        strength: In [0, 1]; 0 keeps the nominal initial joint angles.
        max_std_rad: Noise standard deviation at strength 1, radians.

    Examples:
        >>> import gymnasium as gym, vla_gym
        >>> from vla_gym.perturbations import RobotInitPerturbation
        >>> env = RobotInitPerturbation(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=1.0)
        >>> obs, info = env.reset(seed=0)
        >>> obs["joint_pos"].shape
        (7,)
        >>> env.close()
    """

    salt = "robot_init"

    def __init__(self, env: gym.Env, strength: float, max_std_rad: float = 0.1) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, max_std_rad=max_std_rad)
        super().__init__(env, strength)
        self.max_std_rad = check_positive("max_std_rad", max_std_rad)

    def apply(self, model: Any, rng: np.random.Generator) -> None:
        """Perturb the arm joints of robot 0 in place."""
        data = mj_data(self._base)
        robot = self._base.sim_env.robots[0]
        qidx = np.asarray(robot._ref_joint_pos_indexes)
        vidx = np.asarray(robot._ref_joint_vel_indexes)
        noise = rng.normal(0.0, self.strength * self.max_std_rad, size=len(qidx))
        q = data.qpos[qidx] + noise
        for k, joint in enumerate(robot.robot_joints):
            j = model.joint(joint).id
            if model.jnt_limited[j]:
                lo, hi = model.jnt_range[j]
                q[k] = np.clip(q[k], lo, hi)
        data.qpos[qidx] = q
        data.qvel[vidx] = 0.0
