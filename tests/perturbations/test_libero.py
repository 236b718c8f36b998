"""Model-editing perturbations on LIBERO, which rebuilds its MuJoCo model at every reset."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from vla_gym import perturbations as P

BOWL = "akita_black_bowl_1"


@pytest.fixture(scope="module")
def plain():
    env = gym.make("vla_gym/libero_spatial", task=0, cameras=("agentview",), image_size=48, privileged=True)
    obs, _ = env.reset(seed=0, options={"init_state_id": 0})
    yield obs
    env.close()


def test_visual_and_layout_perturbations_are_reapplied_after_libero_rebuilds_its_model(plain):
    base = gym.make("vla_gym/libero_spatial", task=0, cameras=("agentview",), image_size=48, privileged=True)
    env = P.LayoutPerturbation(P.LightingPerturbation(P.CameraPerturbation(base, strength=1.0), strength=1.0),
                               strength=1.0)
    try:
        first, _ = env.reset(seed=0, options={"init_state_id": 0})
        second, _ = env.reset(seed=0, options={"init_state_id": 0})  # a fresh model: edits again
    finally:
        env.close()
    np.testing.assert_array_equal(first["images"]["agentview"], second["images"]["agentview"])
    np.testing.assert_array_equal(first["privileged"]["poses"][BOWL], second["privileged"]["poses"][BOWL])
    diff = np.abs(first["images"]["agentview"].astype(int) - plain["images"]["agentview"]).mean()
    assert diff > 2.0
    moved = np.linalg.norm(first["privileged"]["poses"][BOWL][:2] - plain["privileged"]["poses"][BOWL][:2])
    assert 0.02 < moved < 0.08  # 5 cm layout shift, then the settle steps


def test_strength_zero_is_the_plain_libero_env(plain):
    base = gym.make("vla_gym/libero_spatial", task=0, cameras=("agentview",), image_size=48, privileged=True)
    env = P.LightingPerturbation(P.CameraPerturbation(base, strength=0.0), strength=0.0)
    try:
        obs, _ = env.reset(seed=0, options={"init_state_id": 0})
    finally:
        env.close()
    np.testing.assert_array_equal(obs["images"]["agentview"], plain["images"]["agentview"])
    np.testing.assert_array_equal(obs["state"], plain["state"])
