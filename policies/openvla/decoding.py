"""Action de-tokenisation, un-normalisation and LIBERO gripper post-processing (numpy only).

Follows ``OpenVLAForActionPrediction.predict_action`` and ``experiments/robot/robot_utils.py``:

- bins ``linspace(-1, 1, n_bins)``, ``n_bins - 1`` bin centers;
- token ``t`` -> ``clip(vocab_size - t - 1, 0, n_bins - 2)`` -> bin center, where
  ``vocab_size = text vocab - pad_to_multiple_of`` (32000): the last 256 ids of the Llama vocab
  are the action tokens, and a non-action token is clipped to the edge bin;
- un-normalise where ``mask`` (default all true): ``0.5 (a + 1) (q99 - q01) + q01``
  (OFT adds ``+ 1e-8`` to the range), done by the toolkit's ``NormStats`` from :func:`action_stats`;
- LIBERO gripper: ``[0, 1] -> [-1, 1]``, ``sign``, then flip (the RLDS data has 0 = close).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from vla_gym.policies.openvla.errors import UnnormKeyError


def bin_centers(n_action_bins: int = 256) -> np.ndarray:
    """Centers of the ``n_action_bins - 1`` uniform bins over [-1, 1] (float64 like the reference)."""
    bins = np.linspace(-1, 1, n_action_bins)
    return (bins[:-1] + bins[1:]) / 2.0


def tokens_to_normalized_actions(
    token_ids: np.ndarray, vocab_size: int, n_action_bins: int = 256
) -> np.ndarray:
    """Map generated token ids to normalised actions in [-1, 1]."""
    centers = bin_centers(n_action_bins)
    discretized = vocab_size - np.asarray(token_ids, dtype=np.int64)
    idx = np.clip(discretized - 1, 0, centers.shape[0] - 1)
    return centers[idx]


def resolve_unnorm_key(norm_stats: dict[str, Any], unnorm_key: str | None) -> str:
    """Pick the dataset statistics to use; clear error listing the available keys otherwise."""
    keys = sorted(norm_stats)
    if not keys:
        raise UnnormKeyError(
            "the checkpoint has no normalisation statistics (config.json `norm_stats` and "
            "dataset_statistics.json are both empty/missing), so actions cannot be un-normalised"
        )
    if unnorm_key is None:
        if len(keys) != 1:
            raise UnnormKeyError(
                f"the checkpoint was trained on {len(keys)} datasets; set `unnorm_key` to one of: {keys}"
            )
        return keys[0]
    if unnorm_key not in norm_stats:
        raise UnnormKeyError(
            f"unnorm_key {unnorm_key!r} is not in the checkpoint's statistics; choose one of: {keys}"
        )
    return unnorm_key


def action_stats(norm_stats: dict[str, Any], unnorm_key: str) -> dict[str, np.ndarray]:
    """The ``action`` statistics (q01, q99, mask) of one dataset as arrays, validated."""
    stats = norm_stats[unnorm_key].get("action") if isinstance(norm_stats[unnorm_key], dict) else None
    if not stats or "q01" not in stats or "q99" not in stats:
        raise UnnormKeyError(f"statistics for {unnorm_key!r} lack action q01/q99 (quantile normalisation)")
    q01 = np.asarray(stats["q01"], dtype=np.float64)
    q99 = np.asarray(stats["q99"], dtype=np.float64)
    mask = np.asarray(stats.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
    if not (q01.shape == q99.shape == mask.shape):
        raise UnnormKeyError(f"statistics for {unnorm_key!r}: q01/q99/mask shapes differ")
    return {"q01": q01, "q99": q99, "mask": mask}


def libero_gripper(actions: np.ndarray) -> np.ndarray:
    """Reference LIBERO post-processing of the last dim: [0,1] -> [-1,1], sign, invert.

    Result: -1 = open, +1 = close (the env convention). ``sign(0) = 0`` as in the reference.
    """
    out = np.array(actions, dtype=np.float64, copy=True)
    out[..., -1] = 2.0 * (out[..., -1] - 0.0) / (1.0 - 0.0) - 1.0
    out[..., -1] = np.sign(out[..., -1])
    out[..., -1] = -out[..., -1]
    return out


def normalize_proprio(state: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """OFT proprio normalisation (bounds_q99): ``clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)``."""
    q01 = np.asarray(stats["q01"], dtype=np.float64)
    q99 = np.asarray(stats["q99"], dtype=np.float64)
    mask = np.asarray(stats.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
    x = np.asarray(state, dtype=np.float64)
    if x.shape != q01.shape:
        raise ValueError(f"proprio has shape {x.shape}, statistics expect {q01.shape}")
    return np.clip(np.where(mask, 2 * (x - q01) / (q99 - q01 + 1e-8) - 1, x), -1.0, 1.0)
