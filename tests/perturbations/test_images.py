"""Pixel noise, motion blur and JPEG: what they change, determinism, JPEG q100 ~ identity."""

from __future__ import annotations

import numpy as np

from tests.perturbations.conftest import make_lift, rollout
from vla_gym import perturbations as P
from vla_gym.perturbations.sensor_noise import motion_blur


def test_pixel_noise_is_seeded_and_touches_images_only(reference):
    env = P.GaussianPixelNoise(make_lift(), strength=1.0, max_sigma=20.0)
    try:
        a = rollout(env, n_steps=2)
        b = rollout(env, n_steps=2)
        c = rollout(env, n_steps=2, seed=4)
    finally:
        env.close()
    for x, y, r in zip(a, b, reference):
        np.testing.assert_array_equal(x["img/agentview"], y["img/agentview"])
        np.testing.assert_array_equal(x["state"], r["state"])
        residual = x["img/wrist"].astype(float) - r["img/wrist"]
        assert 10 < residual.std() < 25
    assert not np.array_equal(a[1]["img/agentview"], a[2]["img/agentview"])  # fresh noise per step
    assert not np.array_equal(a[0]["img/agentview"], c[0]["img/agentview"])  # other seed, other noise


def test_noise_does_not_corrupt_the_env_frame_cache():
    env = P.GaussianPixelNoise(make_lift(cameras=("agentview",), render_mode="rgb_array", render_size=48),
                               strength=1.0)
    try:
        obs, _ = env.reset(seed=0)
        clean = env.unwrapped.render_camera_image("agentview", 48)
        assert not np.array_equal(obs["images"]["agentview"], clean)
        np.testing.assert_array_equal(env.render(), clean)
    finally:
        env.close()


def test_jpeg_quality_100_is_close_to_identity_and_low_quality_is_not(reference):
    envs = {q: P.JpegCompression(make_lift(), strength=0.0, quality=q) for q in (100, 10)}
    try:
        got = {q: rollout(e, n_steps=0)[0] for q, e in envs.items()}
    finally:
        for e in envs.values():
            e.close()
    ref = reference[0]["img/agentview"].astype(int)
    err100 = np.abs(got[100]["img/agentview"].astype(int) - ref)
    err10 = np.abs(got[10]["img/agentview"].astype(int) - ref)
    # not exact: 4:2:0 chroma subsampling smears colour edges by a few grey levels (tens at a few edge pixels)
    assert err100.mean() < 1.5 and np.percentile(err100, 99) <= 10
    assert err10.mean() > 2 * err100.mean() + 1
    assert envs[100].quality_level() == 100


def test_jpeg_strength_maps_to_quality():
    env = make_lift(cameras=())
    try:
        assert P.JpegCompression(env, strength=0.5).quality_level() == 55
        assert P.JpegCompression(env, strength=1.0, min_quality=30).quality_level() == 30
    finally:
        env.close()


def test_motion_blur_kernel_length_and_direction():
    img = np.zeros((9, 9, 3), dtype=np.uint8)
    img[4, 4] = 90
    horizontal = motion_blur(img, 3, 0.0)
    np.testing.assert_array_equal(horizontal[4, 3:6, 0], [30, 30, 30])
    assert horizontal[3, 4, 0] == 0 and horizontal[5, 4, 0] == 0
    np.testing.assert_array_equal(motion_blur(img, 1, 0.3), img)
