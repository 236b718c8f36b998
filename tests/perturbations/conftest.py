"""Helpers for perturbation tests: small robosuite Lift envs with a reproducible build."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

LIFT_SEED = 3
PUSH = np.array([0.5, 0.3, -0.2, 0.0, 0.0, 0.0, -1.0], dtype=np.float32)


def make_lift(**kwargs: Any) -> gym.Env:
    """A Lift env with 48x48 agentview + wrist images and privileged poses.

    robosuite draws Lift's cube size from the global NumPy RNG when the env is *built* (not at
    reset), so the global RNG is seeded first: two envs built here are the same scene.
    """
    np.random.seed(0)
    opts = dict(cameras=("agentview", "wrist"), image_size=48, privileged=True)
    opts.update(kwargs)
    return gym.make("vla_gym/Lift", **opts)


def snapshot(obs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Everything an observation says, flattened to arrays for exact comparison."""
    out = {f"img/{k}": np.asarray(v) for k, v in obs["images"].items()}
    out["state"] = np.asarray(obs["state"])
    out["joint_pos"] = np.asarray(obs["joint_pos"])
    for k, v in obs.get("privileged", {}).get("poses", {}).items():
        out[f"pose/{k}"] = np.asarray(v)
    return out


def rollout(env: gym.Env, n_steps: int = 4, seed: int = LIFT_SEED, action: np.ndarray = PUSH) -> list[dict]:
    """Reset with ``seed`` and apply ``action`` n times; return the snapshots (reset first)."""
    obs, _ = env.reset(seed=seed)
    snaps = [snapshot(obs) | {"instruction": obs["instruction"]}]
    for _ in range(n_steps):
        obs, *_ = env.step(action)
        snaps.append(snapshot(obs) | {"instruction": obs["instruction"]})
    return snaps


def assert_same(a: dict, b: dict) -> None:
    """Exact equality of two snapshots."""
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], str):
            assert a[k] == b[k], k
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    """The unperturbed rollout every test compares against."""
    env = make_lift()
    try:
        return rollout(env)
    finally:
        env.close()
