"""robosuite tasks through the vla_gym env: real simulator, real renderer, small images."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from vla_gym.envs.robosuite_tasks import TASKS


def _make(task="Lift", **kw):
    kw.setdefault("cameras", ("agentview",))
    kw.setdefault("image_size", 64)
    return gym.make(f"vla_gym/{task}", **kw)


def test_gymnasium_env_checker_passes_on_lift():
    env = _make(render_mode="rgb_array", render_size=64, privileged=True)
    try:
        check_env(env.unwrapped, skip_render_check=False)
    finally:
        env.close()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_robosuite_task_builds_with_instruction_and_privileged_poses(task):
    env = _make(task, cameras=("agentview", "wrist"), image_size=32, privileged=True)
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        assert obs["instruction"] == TASKS[task].instruction and len(obs["instruction"]) > 5
        assert set(obs["images"]) == {"agentview", "wrist"}
        assert obs["privileged"]["poses"] and obs["privileged"]["goal"]
        assert env.spec.max_episode_steps == TASKS[task].max_episode_steps
    finally:
        env.close()


def _red_centroid(image: np.ndarray) -> np.ndarray:
    r, g, b = (image[..., i].astype(int) for i in range(3))
    mask = (r > 100) & (g < 70) & (b < 70)
    assert mask.sum() > 5, "red cube not visible"
    rows, cols = np.nonzero(mask)
    return np.array([rows.mean(), cols.mean()])


def _project(env, point: np.ndarray, camera: str, size: int) -> np.ndarray:
    """Pixel (row, col) of a world point in an *upright* image, from MuJoCo's camera model."""
    sim = env.unwrapped.sim_env.sim
    cid = sim.model.camera_name2id(camera)
    pos, rot = sim.data.cam_xpos[cid], sim.data.cam_xmat[cid].reshape(3, 3)
    pc = rot.T @ (point - pos)  # camera frame: x right, y up, looking along -z
    f = (size / 2) / np.tan(np.deg2rad(sim.model.cam_fovy[cid]) / 2)
    col = size / 2 + f * pc[0] / -pc[2]
    row = size / 2 - f * pc[1] / -pc[2]  # upright: larger world-up = smaller row
    return np.array([row, col])


@pytest.mark.parametrize("camera", ["agentview", "sideview"])
def test_images_are_upright_and_not_mirrored(camera):
    """The red cube appears where the pinhole projection of its centre says, in upright pixels."""
    size = 256
    env = _make(cameras=(camera,), image_size=size, privileged=True)
    try:
        obs, _ = env.reset(seed=3)
        cube = obs["privileged"]["poses"]["cube"][:3].astype(np.float64)
        seen = _red_centroid(obs["images"][camera])
        expected = _project(env, cube, camera, size)
        assert np.abs(seen - expected).max() < 6, (seen, expected)
        raw = env.unwrapped.sim_env.sim.render(camera_name=camera, width=size, height=size)
        np.testing.assert_array_equal(obs["images"][camera], raw[::-1])
    finally:
        env.close()


def test_same_seed_same_scene_different_seed_different_scene():
    env = _make(privileged=True)
    try:
        a, _ = env.reset(seed=11)
        b, _ = env.reset(seed=11)
        c, _ = env.reset(seed=12)
        np.testing.assert_array_equal(a["images"]["agentview"], b["images"]["agentview"])
        np.testing.assert_array_equal(a["privileged"]["poses"]["cube"], b["privileged"]["poses"]["cube"])
        assert not np.allclose(a["privileged"]["poses"]["cube"], c["privileged"]["poses"]["cube"])
    finally:
        env.close()


def test_scripted_expert_lifts_the_cube_and_episode_terminates_on_success():
    from vla_gym.chunking import ChunkedActor
    from vla_gym.policies.scripted import ScriptedPickPlacePolicy

    env = _make(cameras=(), privileged=True)
    actor = ChunkedActor(ScriptedPickPlacePolicy())
    try:
        obs, info = env.reset(seed=0)
        actor.reset(env_ids=[0], seeds=[0])
        assert not info["is_success"]
        for _ in range(env.spec.max_episode_steps):
            obs, reward, terminated, truncated, info = env.step(actor.step({0: obs})[0])
            if terminated or truncated:
                break
        assert terminated and info["is_success"] and reward == 1.0 and not truncated
    finally:
        env.close()


def test_unknown_task_and_camera_errors_name_valid_choices():
    from vla_gym.envs.robosuite_tasks import RobosuiteEnv

    with pytest.raises(ValueError, match="did you mean 'Lift'"):
        RobosuiteEnv(task="Lfit")
    with pytest.raises(ValueError, match="unknown camera 'nope'.*agentview"):
        _make(cameras=("nope",))


def test_unknown_camera_error_leaves_no_half_built_gl_context(subprocess_env):
    """The clear error comes from a camera-less probe built first, so no failed robosuite build leaves
    a GL context behind for EGL to report at interpreter exit (it printed an EGLError traceback)."""
    import subprocess
    import sys

    code = ("from vla_gym.envs.robosuite_tasks import RobosuiteEnv\n"
            "try:\n    RobosuiteEnv(task='Lift', cameras=('nope',), image_size=64).reset(seed=0)\n"
            "except ValueError as exc:\n    print('refused:', exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env,
                          timeout=300)
    assert proc.returncode == 0 and "refused: unknown camera 'nope'" in proc.stdout, proc.stderr[-2000:]
    assert "EGLError" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-2000:]


def test_two_builds_of_a_task_are_the_same_scene():
    """robosuite samples Lift's cube size at build time; vla_gym seeds it, so builds agree."""
    a, b = _make(privileged=True), _make(privileged=True)
    try:
        oa, _ = a.reset(seed=5)
        ob, _ = b.reset(seed=5)
        import numpy as np

        np.testing.assert_array_equal(oa["privileged"]["boxes"]["cube"], ob["privileged"]["boxes"]["cube"])
        np.testing.assert_array_equal(oa["images"]["agentview"], ob["images"]["agentview"])
    finally:
        a.close()
        b.close()
