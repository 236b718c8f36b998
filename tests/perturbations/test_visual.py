"""Camera, lighting and background change pixels only; camera only its own camera; seeded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.perturbations.conftest import make_lift, rollout
from vla_gym import perturbations as P


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


@pytest.mark.parametrize("cls", [P.CameraPerturbation, P.LightingPerturbation, P.BackgroundPerturbation],
                         ids=lambda c: c.__name__)
def test_visual_perturbation_changes_pixels_not_physics(cls, reference):
    env = cls(make_lift(), strength=1.0)
    try:
        got = rollout(env)
        again = rollout(env)  # second episode: edits re-applied, not accumulated
    finally:
        env.close()
    assert _mean_abs(got[0]["img/agentview"], reference[0]["img/agentview"]) > 2.0
    for g, r, a in zip(got, reference, again):
        for key in ("state", "joint_pos", "pose/cube"):
            np.testing.assert_array_equal(g[key], r[key], err_msg=key)
        np.testing.assert_array_equal(g["img/agentview"], a["img/agentview"])


def test_camera_perturbation_leaves_other_cameras_alone(reference):
    env = P.CameraPerturbation(make_lift(), strength=1.0, camera="agentview")
    try:
        got = rollout(env, n_steps=1)
    finally:
        env.close()
    np.testing.assert_array_equal(got[0]["img/wrist"], reference[0]["img/wrist"])
    assert _mean_abs(got[0]["img/agentview"], reference[0]["img/agentview"]) > 2.0


def test_visual_perturbation_depends_on_seed():
    env = P.LightingPerturbation(make_lift(), strength=1.0)
    try:
        a, _ = env.reset(seed=1)
        a = a["images"]["agentview"].copy()
        b, _ = env.reset(seed=2)
        c, _ = env.reset(seed=1)
    finally:
        env.close()
    np.testing.assert_array_equal(a, c["images"]["agentview"])
    assert not np.array_equal(a, b["images"]["agentview"])


def test_lighting_can_force_shadows_even_at_strength_zero():
    env = P.LightingPerturbation(make_lift(cameras=()), strength=0.0, shadows=True)
    try:
        env.reset(seed=0)
        assert env.unwrapped.sim_env.sim.model._model.light_castshadow.all()
    finally:
        env.close()
