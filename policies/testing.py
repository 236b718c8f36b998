"""Deterministic fake inputs for tests and benchmarks (numpy only; no env, no torch).

Benchmarks must not import from ``tests/``, so the fake frames and LIBERO-like observations
live here; the tiny checkpoints they go with are written by
:mod:`vla_gym.policies.openvla.make_tiny`.
"""

from __future__ import annotations

import numpy as np

from vla_gym.policy import Observation

INSTRUCTION = "Pick up the black bowl between the plate and the ramekin and place it on the plate"
# Instructions of different token lengths, for batches that need padding.
BATCH_INSTRUCTIONS = (
    "open the drawer",
    INSTRUCTION,
    "put the cream cheese in the bowl",
    "turn on the stove and put the moka pot on it",
)


def make_frame(size: int = 256, seed: int = 7) -> np.ndarray:
    """A deterministic, asymmetric raw (upside-down) frame: gradients, blocks and mild noise.

    The same function produced ``tests/policies/data/tf_libero_image_path.npz`` with TensorFlow 2.21.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.stack([x / size * 255, y / size * 255, (x + y) / (2 * size) * 255], axis=-1)
    img[40:90, 30:150] = [200, 30, 40]
    img[150:230, 170:240] = [20, 180, 60]
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def observation(
    size: int = 256, seed: int = 0, wrist: bool = False, instruction: str = INSTRUCTION
) -> Observation:
    """A LIBERO-like observation with upright images."""
    rng = np.random.default_rng(seed)
    images = {"agentview": make_frame(size, seed + 7)[::-1].copy()}
    if wrist:
        images["wrist"] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return {
        "images": images,
        "instruction": instruction,
        "state": np.array([-0.05, 0.01, 1.10, 3.10, 0.10, -0.10, 0.03, -0.03], dtype=np.float32),
        "joint_pos": np.zeros(7, dtype=np.float32),
    }


def observation_batch(n: int, size: int = 256, wrist: bool = False) -> list[Observation]:
    """``n`` observations that differ in images, state and instruction (cycling through
    :data:`BATCH_INSTRUCTIONS`, so prompts of different lengths share a batch)."""
    out = []
    for i in range(n):
        instruction = BATCH_INSTRUCTIONS[i % len(BATCH_INSTRUCTIONS)]
        obs = observation(size=size, seed=i, wrist=wrist, instruction=instruction)
        obs["state"] = obs["state"] + np.float32(0.02 * i)
        out.append(obs)
    return out
