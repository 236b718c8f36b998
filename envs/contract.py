"""The observation/action contract shared by every vla_gym env, in one place.

Image orientation
    The simulator's OpenGL frames come out bottom-up (row 0 is the bottom of the picture).
    vla_gym flips them vertically once, here, so every image in an observation is *upright*:
    row 0 is the top of what a person looking through that camera would see, and left is
    left. Adapters whose reference evaluation fed their model something else (OpenVLA's
    LIBERO eval turns the raw frame by 180 degrees, i.e. ``upright[:, ::-1]``) apply that in
    their own preprocessing, so the env never changes per policy.

Cameras
    ``agentview`` (third person) and ``wrist`` (``robot0_eye_in_hand``) are the names
    policies use; any other MuJoCo camera of the scene (``frontview``, ``sideview``,
    ``birdview``) may be requested by its own name.

Action
    7-D float32: ``[dx, dy, dz, dax, day, daz, gripper]`` for robosuite's OSC_POSE
    controller at 20 Hz. Each entry is in [-1, 1] (the controller clips beyond):
    ``a[:3] = ±1`` moves the end effector ``±5 cm`` per step, ``a[3:6] = ±1`` rotates it by
    ``±0.5 rad`` (axis-angle, world frame), gripper ``-1 = open, +1 = close`` (LIBERO).

State
    ``state`` float32 (8,): end-effector position (3, metres, world frame), end-effector
    orientation as axis-angle (3, robosuite ``quat2axisangle`` of the xyzw quaternion) and the
    two gripper finger joint positions (2) -- the 8-D proprio OpenVLA-OFT and pi0 consume.
    ``joint_pos`` float32 (7,): the arm's raw joint angles (radians).
"""

from __future__ import annotations

import string

import numpy as np

CAMERA_ALIASES: dict[str, str] = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
"""Policy-facing camera name -> MuJoCo camera name."""

SCENE_CAMERAS: frozenset[str] = frozenset({
    "agentview", "birdview", "frontview", "sideview", "robot0_robotview", "robot0_eye_in_hand", "galleryview",
})
"""MuJoCo cameras of robosuite's standard arenas (LIBERO's scenes add ``galleryview``). A requested
camera outside this set is checked against a camera-less build of the scene *before* the real
one: a robosuite build that fails on an unknown camera leaves a half-built GL context behind,
which EGL reports as an error at interpreter exit."""

ACTION_DIM = 7
STATE_DIM = 8
NUM_ARM_JOINTS = 7
CONTROL_FREQ_HZ = 20
GRIPPER_OPEN = -1.0
GRIPPER_CLOSE = 1.0
SETTLE_ACTION = np.array([0, 0, 0, 0, 0, 0, GRIPPER_OPEN], dtype=np.float32)
"""No-op with the gripper open: the action LIBERO's reference evals send while objects settle."""

OSC_POS_METRES_PER_UNIT = 0.05
OSC_ROT_RADIANS_PER_UNIT = 0.5

INSTRUCTION_CHARSET = string.ascii_letters + string.digits + string.punctuation + " "
INSTRUCTION_MAX_LENGTH = 512


def mujoco_camera_name(camera: str) -> str:
    """Map a policy-facing camera name to the MuJoCo camera that renders it."""
    return CAMERA_ALIASES.get(camera, camera)


def upright(raw_frame: np.ndarray) -> np.ndarray:
    """Turn a raw (bottom-up OpenGL) simulator frame into the upright image vla_gym emits."""
    return np.ascontiguousarray(raw_frame[::-1])


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle of an xyzw quaternion, exactly as robosuite's ``quat2axisangle``.

    Kept bit-compatible with the function OpenVLA-OFT's LIBERO eval calls (no sign
    canonicalisation), so the 8-D state matches what those policies were trained on.
    """
    q = np.asarray(quat_xyzw, dtype=np.float64).copy()
    q[3] = np.clip(q[3], -1.0, 1.0)
    den = np.sqrt(1.0 - q[3] * q[3])
    if np.isclose(den, 0.0, rtol=1e-9, atol=0.0):
        return np.zeros(3)
    return q[:3] * 2.0 * np.arccos(q[3]) / den


def check_action(action: np.ndarray) -> np.ndarray:
    """Validate one env action; raise ``ValueError`` naming the problem."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (ACTION_DIM,):
        raise ValueError(
            f"action must have shape ({ACTION_DIM},) = [dx, dy, dz, dax, day, daz, gripper], got {a.shape}; "
            "if your policy returns a chunk (T, 7), execute it with vla_gym.chunking"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN or inf: {a.tolist()}")
    return a
