"""Camera perturbation: move, turn and zoom one camera (LIBERO-plus "camera" axis)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vla_gym.envs import contract
from vla_gym.perturbations._common import (
    ModelEditWrapper,
    axis_angle_quat,
    check_positive,
    random_unit_vector,
)


class CameraPerturbation(ModelEditWrapper):
    """Shift, rotate and change the field of view of one camera; physics is untouched.

    At strength ``s`` (magnitudes are exact, directions are drawn from the episode seed):

    - position: moved by ``s * max_shift_m`` (default 0.10 m) along a random direction;
    - orientation: turned by ``s * max_rotation_deg`` (default 15 deg) about a random axis of
      the camera frame;
    - field of view: ``fovy * (1 +/- s * max_fovy_scale)`` (default +/-20 %, random sign).

    Only ``model.cam_pos/cam_quat/cam_fovy`` of that camera change, so other cameras' images,
    object poses and the robot state are exactly those of the unperturbed env.

    Args:
        env: A vla_gym env.
        strength: In [0, 1]; 0 leaves the camera as it is.
        camera: Camera to perturb (policy alias such as ``agentview`` or a MuJoCo name).
        max_shift_m: Position shift at strength 1, metres.
        max_rotation_deg: Rotation at strength 1, degrees.
        max_fovy_scale: Relative field-of-view change at strength 1.

    Examples:
        >>> import gymnasium as gym, vla_gym
        >>> from vla_gym.perturbations import CameraPerturbation
        >>> env = CameraPerturbation(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=0.5)
        >>> obs, info = env.reset(seed=0)
        >>> obs["images"]["agentview"].shape
        (64, 64, 3)
        >>> env.close()
    """

    model_fields = ("cam_pos", "cam_quat", "cam_fovy")
    salt = "camera"

    def __init__(self, env: gym.Env, strength: float, camera: str = "agentview", max_shift_m: float = 0.10,
                 max_rotation_deg: float = 15.0, max_fovy_scale: float = 0.2) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, camera=camera, max_shift_m=max_shift_m,
                                                 max_rotation_deg=max_rotation_deg, max_fovy_scale=max_fovy_scale)
        super().__init__(env, strength)
        self.camera = contract.mujoco_camera_name(camera)
        names = list(self._base.sim_env.sim.model.camera_names)
        if self.camera not in names:
            raise ValueError(f"unknown camera {camera!r} for CameraPerturbation; cameras of this scene: {names}")
        self.max_shift_m = check_positive("max_shift_m", max_shift_m)
        self.max_rotation_deg = check_positive("max_rotation_deg", max_rotation_deg)
        self.max_fovy_scale = check_positive("max_fovy_scale", max_fovy_scale)
        if self.max_fovy_scale >= 1:
            raise ValueError(f"max_fovy_scale must be < 1 (fovy must stay positive), got {max_fovy_scale}")

    def apply(self, model: Any, rng: np.random.Generator) -> None:
        """Move, turn and zoom the camera by this episode's draw."""
        import mujoco

        cam = model.camera(self.camera).id
        s = self.strength
        model.cam_pos[cam] += s * self.max_shift_m * random_unit_vector(rng)
        dq = axis_angle_quat(random_unit_vector(rng), np.deg2rad(s * self.max_rotation_deg))
        q = np.empty(4)
        mujoco.mju_mulQuat(q, model.cam_quat[cam].copy(), dq)  # local-frame rotation
        model.cam_quat[cam] = q / np.linalg.norm(q)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        model.cam_fovy[cam] *= 1.0 + sign * s * self.max_fovy_scale
