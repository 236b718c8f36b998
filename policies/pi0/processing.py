"""LIBERO observations to pi0 inputs and pi0 outputs to LIBERO actions, as openpi's client and LeRobot's env processor.

Images: :mod:`vla_gym.policies.pi0.images` (each layout its reference's pixels). Camera slots:
``agentview`` -> base, ``wrist`` -> left wrist; a slot with no camera (openpi's right wrist,
LeRobot's ``empty_camera_*``) is -1 with mask False, as both references do for pi0 / pi0.5.

State: the env's 8-D state (eef pos, axis-angle, gripper qpos: openpi's ``observation/state``),
normalised, zero-padded to the model's 32. Actions: the model's 32-D output cut to the stats'
dims, un-normalised, ``a[..., :6] += state[:6]`` for ``pi0_libero`` (openpi ``AbsoluteActions``),
then ``[..., :7]`` (``LiberoOutputs``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vla_gym.policies.pi0.stats import FeatureNorm
from vla_gym.policies.toolkit.errors import CheckpointError
from vla_gym.policy import Observation

DELTA_DIMS = 6  # openpi make_bool_mask(6, -1): joints/eef deltas, gripper absolute

# Checkpoint camera slot -> vla_gym camera (None: an empty, masked slot).
SLOT_CAMERAS: dict[str, str | None] = {
    "base_0_rgb": "agentview",
    "left_wrist_0_rgb": "wrist",
    "right_wrist_0_rgb": None,
    "observation.images.image": "agentview",  # LeRobot LIBERO datasets: agentview_image
    "observation.images.image2": "wrist",  # robot0_eye_in_hand_image
    "observation.images.base_0_rgb": "agentview",
    "observation.images.left_wrist_0_rgb": "wrist",
    "observation.images.right_wrist_0_rgb": None,
}


def slot_cameras(slots: Sequence[str], source: str) -> tuple[str | None, ...]:
    """The vla_gym camera of each model slot (LeRobot ``empty_camera_*`` slots are empty)."""
    out: list[str | None] = []
    for slot in slots:
        if slot.startswith("observation.images.empty_camera_"):
            out.append(None)
        elif slot in SLOT_CAMERAS:
            out.append(SLOT_CAMERAS[slot])
        else:
            raise CheckpointError(f"{source}: image feature {slot!r} has no LIBERO camera; known: {sorted(SLOT_CAMERAS)}")
    if not any(out):
        raise CheckpointError(f"{source}: none of the image slots {list(slots)} is a LIBERO camera")
    return tuple(out)


def raw_states(observations: Sequence[Observation]) -> np.ndarray:
    """(B, 8) float64 env states."""
    states = []
    for obs in observations:
        state = np.asarray(obs.get("state"), dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(state)):
            raise ValueError(f"observation state must be finite, got {state}")
        states.append(state)
    if len({s.shape for s in states}) != 1:
        raise ValueError(f"observation states differ in length: {[s.shape for s in states]}")
    return np.stack(states)


def pad_state(normalized: np.ndarray, dim: int) -> np.ndarray:
    """Zero-pad (B, d) to (B, dim) float32 (openpi ``PadStatesAndActions``)."""
    b, d = normalized.shape
    if d > dim:
        raise ValueError(f"state has {d} dims but the model takes {dim}")
    out = np.zeros((b, dim), dtype=np.float32)
    out[:, :d] = normalized
    return out


def to_env_actions(model_out: np.ndarray, norm: FeatureNorm, raw_state: np.ndarray, *, delta_actions: bool,
                   output_dim: int) -> np.ndarray:
    """(B, H, 32) normalised model actions -> (B, H, output_dim) float32 env actions."""
    actions = norm.unnormalize(model_out[..., : norm.dim])
    if delta_actions:
        actions[..., :DELTA_DIMS] += raw_state[:, None, :DELTA_DIMS]
    if actions.shape[-1] < output_dim:
        raise CheckpointError(f"action statistics have {actions.shape[-1]} dims, fewer than the {output_dim} returned")
    return actions[..., :output_dim].astype(np.float32)
