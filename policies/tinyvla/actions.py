"""From TinyVLA's (un-normalised) action to vla_gym's env action, with the convention made explicit.

The env takes a 7-D *delta* end-effector command: xyz, axis-angle rotation, gripper (-1 open,
+1 close). TinyVLA's default head is 10-D: xyz + 6-D rotation (the first two rows of a rotation
matrix, Zhou et al.) + gripper; its Franka eval turns the 6-D part into Euler XYZ angles for its
own controller (``eval_real_franka.convert_actions``). Which transform applies depends on what the
checkpoint was trained to output, which the checkpoint does not record, so it is a setting:

- ``identity``: a 7-D checkpoint already in the env convention (e.g. trained on LIBERO actions).
- ``delta_rot6d``: 10-D actions that are *deltas*: xyz passes through, the 6-D rotation is
  Gram-Schmidt-orthonormalised to a matrix (``torch_utils.rotation_6d_to_matrix``) and written as
  axis-angle (the env's rotation input) instead of the Franka eval's Euler angles; gripper passes.
- ``auto`` (default): ``identity`` for 7-D checkpoints; for others an error asking for a choice.

Absolute poses (``absolute_rot6d``) are refused: the env's OSC controller takes scaled deltas, and
turning an absolute target into one needs the controller's gains and limits, which an action
transform cannot know.
"""

from __future__ import annotations

import numpy as np

TRANSFORMS = ("auto", "identity", "delta_rot6d")


class ActionTransformError(ValueError):
    """An action transform that cannot be applied to this checkpoint's actions."""


def resolve_transform(name: str, action_dim: int) -> str:
    """The concrete transform for ``action_dim``-D actions; raises on what cannot be converted."""
    if name == "absolute_rot6d":
        raise ActionTransformError(
            "action_transform=absolute_rot6d: absolute end-effector targets cannot be converted to the env's "
            "delta OSC command without the controller's gains; use a checkpoint trained on delta actions")
    if name not in TRANSFORMS:
        raise ActionTransformError(f"unknown action_transform {name!r}; valid: {list(TRANSFORMS)}")
    if name == "auto":
        if action_dim == 7:
            return "identity"
        raise ActionTransformError(
            f"the checkpoint predicts {action_dim}-D actions; set policy.action_transform explicitly "
            "(delta_rot6d for TinyVLA's 10-D xyz + rot6d + gripper *delta* actions; absolute targets cannot be "
            "converted)")
    need = 7 if name == "identity" else 10
    if action_dim != need:
        raise ActionTransformError(f"action_transform={name} needs {need}-D actions; the checkpoint has {action_dim}")
    return name


def rot6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3): Gram-Schmidt on the two rows, third row their cross product (rows stacked)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), 1e-12)
    b2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = b2 / np.maximum(np.linalg.norm(b2, axis=-1, keepdims=True), 1e-12)
    b3 = np.cross(b1, b2)
    return np.stack((b1, b2, b3), axis=-2)


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle (angle in [0, pi]), via a unit quaternion."""
    m = np.asarray(m, dtype=np.float64)
    flat = m.reshape(-1, 3, 3)
    out = np.empty((flat.shape[0], 3))
    for i, r in enumerate(flat):
        tr = np.trace(r)
        cand = np.array([tr, r[0, 0], r[1, 1], r[2, 2]])
        k = int(np.argmax(cand))
        if k == 0:
            s = 2.0 * np.sqrt(max(1.0 + tr, 0.0))
            q = np.array([0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s])
        else:
            a, b, c = (k - 1), k % 3, (k + 1) % 3
            s = 2.0 * np.sqrt(max(1.0 + r[a, a] - r[b, b] - r[c, c], 0.0))
            q = np.empty(4)
            q[0] = (r[c, b] - r[b, c]) / s
            q[1 + a] = 0.25 * s
            q[1 + b] = (r[b, a] + r[a, b]) / s
            q[1 + c] = (r[c, a] + r[a, c]) / s
        if q[0] < 0:
            q = -q
        vec = np.linalg.norm(q[1:])
        angle = 2.0 * np.arctan2(vec, q[0])
        out[i] = q[1:] * (angle / vec) if vec > 1e-12 else 2.0 * q[1:]
    return out.reshape(m.shape[:-2] + (3,))


def to_env_actions(actions: np.ndarray, transform: str) -> np.ndarray:
    """(B, T, D) un-normalised actions -> (B, T, 7) env actions, float32."""
    actions = np.asarray(actions, dtype=np.float64)
    if transform == "identity":
        return actions.astype(np.float32)
    if transform == "delta_rot6d":
        rot = matrix_to_axis_angle(rot6d_to_matrix(actions[..., 3:9]))
        return np.concatenate([actions[..., :3], rot, actions[..., 9:10]], axis=-1).astype(np.float32)
    raise ActionTransformError(f"unresolved action transform {transform!r}")
