"""Strength 0 is exactly no perturbation, for every wrapper (pixels, state, poses, instruction)."""

from __future__ import annotations

import pytest

from tests.perturbations.conftest import assert_same, make_lift, rollout
from vla_gym import perturbations as P

ALL = [P.CameraPerturbation, P.LightingPerturbation, P.BackgroundPerturbation, P.LayoutPerturbation,
       P.RobotInitPerturbation, P.DynamicsPerturbation, P.GaussianPixelNoise, P.MotionBlur, P.JpegCompression,
       P.LanguagePerturbation, P.ActionNoise, P.ActionDelay, P.ObservationDelay, P.ControlRate]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_strength_zero_is_identity(cls, reference):
    env = cls(make_lift(), strength=0.0)
    try:
        got = rollout(env)
    finally:
        env.close()
    for a, b in zip(got, reference):
        assert_same(a, b)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_strength_outside_unit_interval_is_rejected(bad):
    env = make_lift(cameras=())
    try:
        with pytest.raises(ValueError, match="strength must be in"):
            P.CameraPerturbation(env, strength=bad)
        with pytest.raises(ValueError, match="strength must be in"):
            P.GaussianPixelNoise(env, strength=bad)
    finally:
        env.close()


def test_unknown_camera_names_the_valid_ones():
    env = make_lift(cameras=())
    try:
        with pytest.raises(ValueError, match="agentview"):
            P.CameraPerturbation(env, strength=1.0, camera="ceilingcam")
    finally:
        env.close()
