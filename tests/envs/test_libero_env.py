"""LIBERO tasks through the vla_gym env: real LIBERO assets, simulator and renderer."""

from __future__ import annotations

import subprocess
import textwrap

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from vla_gym.envs import libero as libero_mod
from vla_gym.envs.libero import LiberoEnv, SUITE_MAX_STEPS


@pytest.fixture(scope="module")
def env():
    env = gym.make("vla_gym/libero_spatial", task=0, cameras=("agentview", "wrist"), image_size=64,
                   render_mode="rgb_array", render_size=96, privileged=True)
    yield env
    env.close()


def test_gymnasium_env_checker_passes(env):
    check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("size", [224, 320])
def test_observation_shapes_and_dtypes_at_policy_sizes(size):
    env = gym.make("vla_gym/libero_object", task=1, cameras=("agentview", "wrist"), image_size=size)
    try:
        obs, info = env.reset(seed=0)
        for cam in ("agentview", "wrist"):
            assert obs["images"][cam].shape == (size, size, 3) and obs["images"][cam].dtype == np.uint8
        assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
        assert obs["joint_pos"].shape == (7,) and obs["joint_pos"].dtype == np.float32
        assert "privileged" not in obs
        assert env.observation_space.contains(obs)
        assert info["suite"] == "libero_object" and info["task_index"] == 1
    finally:
        env.close()


def test_images_are_robosuites_observation_frames_flipped_upright(env):
    """Observed cameras are robosuite's own (bottom-up) observation frames, turned upright.

    The frames equal the raw LIBERO env's observations bit for bit (tests/envs/test_reference_fidelity.py);
    ``render()`` of a camera at a size the policy does not observe renders the end-of-step state.
    """
    obs, _ = env.reset(seed=0, options={"init_state_id": 0})
    obs, *_ = env.step(np.zeros(7))
    raw = env.unwrapped._raw_obs
    np.testing.assert_array_equal(obs["images"]["agentview"], raw["agentview_image"][::-1])
    np.testing.assert_array_equal(obs["images"]["wrist"], raw["robot0_eye_in_hand_image"][::-1])
    frame = env.render()
    sim = env.unwrapped.sim_env.sim
    np.testing.assert_array_equal(frame, sim.render(camera_name="agentview", width=96, height=96)[::-1])


def test_step_after_close_raises_the_same_clear_error_as_reset():
    closed = gym.make("vla_gym/libero_spatial", task=0, cameras=())
    closed.reset(seed=0)
    closed.close()
    for call in (lambda: closed.step(np.zeros(7)), lambda: closed.reset(seed=0)):
        with pytest.raises(RuntimeError, match="env is closed"):
            call()


def test_state_is_eef_pos_axis_angle_and_gripper(env):
    from robosuite.utils.transform_utils import quat2axisangle

    obs, _ = env.reset(seed=0, options={"init_state_id": 3})
    raw = env.unwrapped._raw_obs
    expected = np.concatenate([raw["robot0_eef_pos"], quat2axisangle(raw["robot0_eef_quat"].copy()),
                               raw["robot0_gripper_qpos"]])
    np.testing.assert_allclose(obs["state"], expected.astype(np.float32))


def test_init_state_id_and_seed_give_reproducible_trajectories(env):
    actions = np.random.default_rng(0).uniform(-0.5, 0.5, (5, 7))

    def rollout(**reset_kw):
        obs, info = env.reset(**reset_kw)
        states = [obs["state"]]
        for a in actions:
            obs, *_ = env.step(a)
            states.append(obs["state"])
        return info["init_state_id"], np.stack(states), obs["images"]["agentview"]

    id_a, traj_a, img_a = rollout(seed=4)
    id_b, traj_b, img_b = rollout(seed=4)
    assert id_a == id_b
    np.testing.assert_array_equal(traj_a, traj_b)
    np.testing.assert_array_equal(img_a, img_b)
    id_c, traj_c, _ = rollout(seed=0, options={"init_state_id": 7})
    assert id_c == 7
    # different fixed initial states put the bowl in different places
    p7 = env.reset(seed=0, options={"init_state_id": 7})[0]["privileged"]["poses"]["akita_black_bowl_1"]
    p8 = env.reset(seed=0, options={"init_state_id": 8})[0]["privileged"]["poses"]["akita_black_bowl_1"]
    assert not np.allclose(p7, p8)


def test_settle_steps_run_inside_reset_and_let_objects_land(env):
    env.reset(seed=0, options={"init_state_id": 0})
    base = env.unwrapped
    assert base.sim_env.timestep == libero_mod.NUM_SETTLE_STEPS
    # init states are saved before objects settle: after the settle steps they are at rest
    qvel = base.sim_env.sim.data.qvel
    assert np.abs(qvel).max() < 0.2
    unsettled = LiberoEnv("libero_spatial", 0, cameras=(), num_settle_steps=0)
    try:
        unsettled.reset(seed=0, options={"init_state_id": 0})
        assert unsettled.sim_env.timestep == 0
    finally:
        unsettled.close()


def test_truncation_at_the_suite_limit_and_configurable():
    assert gym.spec("vla_gym/libero_spatial").max_episode_steps == SUITE_MAX_STEPS["libero_spatial"] == 220
    assert gym.spec("vla_gym/libero_10").max_episode_steps == 520
    assert gym.spec("vla_gym/libero_goal_lan").max_episode_steps == 300
    env = gym.make("vla_gym/libero_spatial", task=0, cameras=(), max_episode_steps=3)
    try:
        env.reset(seed=0)
        flags = [env.step(np.zeros(7))[3] for _ in range(3)]
        assert flags == [False, False, True]
    finally:
        env.close()


def test_scripted_expert_reaches_success_and_episode_terminates():
    from vla_gym.chunking import ChunkedActor
    from vla_gym.policies.scripted import ScriptedPickPlacePolicy

    env = gym.make("vla_gym/libero_spatial", task=0, cameras=(), privileged=True)
    actor = ChunkedActor(ScriptedPickPlacePolicy())
    try:
        obs, info = env.reset(seed=0, options={"init_state_id": 0})
        actor.reset()
        terminated = truncated = False
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(actor.step({0: obs})[0])
        assert terminated and info["is_success"] and reward == 1.0
    finally:
        env.close()


def test_bad_inputs_get_clear_errors(env):
    with pytest.raises(ValueError, match="did you mean.*libero_spatial"):
        LiberoEnv("libero_spatail", 0)
    with pytest.raises(ValueError, match="unsupported LIBERO suite 'libero_spatial_env'"):
        LiberoEnv("libero_spatial_env", 0)
    with pytest.raises(ValueError, match=r"task index 10 out of range for libero_spatial \(0..9\)"):
        LiberoEnv("libero_spatial", 10)
    with pytest.raises(ValueError, match="unknown task 'pick up the bowl'"):
        LiberoEnv("libero_spatial", "pick up the bowl")
    with pytest.raises(gym.error.NameNotFound):
        gym.make("vla_gym/libero_nope")
    with pytest.raises(ValueError, match="init_state_id 50 out of range.*50 initial states"):
        env.reset(seed=0, options={"init_state_id": 50})
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0, 0, np.nan, 0, 0, 0, 0]))


def test_base_suite_instruction_is_the_one_the_reference_evals_prompt_with(env):
    """OpenVLA/OFT/openpi/LeRobot evals use task.language, not the bddl's sentence."""
    obs, info = env.reset(seed=0)
    assert obs["instruction"] == env.unwrapped.task.language
    assert obs["instruction"] == "pick up the black bowl between the plate and the ramekin and place it on the plate"
    assert info["bddl_instruction"].startswith("pick the akita black bowl")


def test_libero_pro_language_suite_uses_the_real_instruction():
    """On _lan suites task.language is the original text; the env must use the paraphrase."""
    env = gym.make("vla_gym/libero_spatial_lan", task=0, cameras=())
    try:
        obs, _ = env.reset(seed=0)
        base = env.unwrapped
        assert obs["instruction"] == base._control_env.language_instruction == base.bddl_instruction
        assert obs["instruction"] != base.task.language
    finally:
        env.close()


CREATE_CLOSE_SCRIPT = textwrap.dedent("""
    import resource, gymnasium as gym, numpy as np, vla_gym
    rss = []
    for i in range(5):
        env = gym.make("vla_gym/Lift", cameras=("agentview",), image_size=64)
        env.reset(seed=i); env.step(np.zeros(7)); env.close()
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    left_open = gym.make("vla_gym/Lift", cameras=("agentview",), image_size=64)
    left_open.reset(seed=0)
    print("RSS_KB", rss[1], rss[-1])
""")


def test_create_close_loop_does_not_leak_or_print_egl_errors(subprocess_env):
    from tests.conftest import PYTHON

    proc = subprocess.run([PYTHON, "-c", CREATE_CLOSE_SCRIPT], capture_output=True, text=True,
                          env=subprocess_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "EGLError" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    first, last = (int(x) for x in proc.stdout.split("RSS_KB")[1].split())
    assert last - first < 150_000, f"max RSS grew by {(last - first) / 1024:.0f} MiB over 4 create/close cycles"


def test_fast_render_is_an_explicit_option_with_close_but_different_pixels(env):
    ref, _ = env.reset(seed=0, options={"init_state_id": 0})
    fast_env = gym.make("vla_gym/libero_spatial", task=0, cameras=("agentview", "wrist"), image_size=64,
                        render_mode="rgb_array", render_size=96, privileged=True, render_quality="fast")
    try:
        for _ in range(2):  # LIBERO rebuilds its GL context on reset: the setting must follow
            fast, _ = fast_env.reset(seed=0, options={"init_state_id": 0})
            diff = np.abs(fast["images"]["agentview"].astype(int) - ref["images"]["agentview"])
            assert 0 < diff.mean() < 8
            np.testing.assert_array_equal(fast["state"], ref["state"])  # physics untouched
    finally:
        fast_env.close()
    with pytest.raises(ValueError, match="render_quality must be one of"):
        LiberoEnv("libero_spatial", 0, render_quality="ultra")
