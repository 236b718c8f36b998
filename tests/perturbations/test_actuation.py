"""Action delay (exactly k steps), observation latency, action noise and control rate."""

from __future__ import annotations

import numpy as np

from tests.perturbations.conftest import make_lift
from vla_gym import perturbations as P
from vla_gym.perturbations.latency import HOLD_ACTION


def _actions(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    acts = rng.uniform(-0.6, 0.6, size=(n, 7)).astype(np.float32)
    acts[:, 6] = np.where(np.arange(n) % 4 < 2, -1.0, 1.0)
    return list(acts)


def _eef_trajectory(env, actions) -> tuple[np.ndarray, list[np.ndarray]]:
    env.reset(seed=3)
    states, executed = [], []
    for a in actions:
        obs, _, _, _, info = env.step(a)
        states.append(obs["state"].copy())
        executed.append(info.get("executed_action", a))
    return np.array(states), executed


def test_action_delay_executes_the_action_from_k_steps_earlier():
    k, n = 3, 10
    acts = _actions(n)
    delayed = P.ActionDelay(make_lift(cameras=()), strength=0.0, delay_steps=k)
    plain = make_lift(cameras=())
    try:
        s_delayed, executed = _eef_trajectory(delayed, acts)
        shifted = [HOLD_ACTION.copy() for _ in range(k)] + acts[:-k]
        s_plain, _ = _eef_trajectory(plain, shifted)
    finally:
        delayed.close()
        plain.close()
    for t in range(n):
        expected = HOLD_ACTION if t < k else acts[t - k]
        np.testing.assert_array_equal(executed[t], expected)
    np.testing.assert_array_equal(s_delayed, s_plain)


def test_latency_strength_maps_to_steps():
    env = make_lift(cameras=())
    try:
        assert P.ActionDelay(env, strength=0.5).delay == 2  # round(0.5 * 5) (banker's rounding)
        assert P.ActionDelay(env, strength=1.0).delay == 5
        assert P.ObservationDelay(env, strength=0.4).delay == 2
    finally:
        env.close()


def test_observation_delay_returns_the_observation_from_k_steps_ago():
    k, n = 2, 6
    acts = _actions(n)
    delayed = P.ObservationDelay(make_lift(cameras=()), strength=0.0, delay_steps=k)
    plain = make_lift(cameras=())
    try:
        s_delayed, _ = _eef_trajectory(delayed, acts)
        s_plain, _ = _eef_trajectory(plain, acts)
        reset_state = plain.reset(seed=3)[0]["state"]
    finally:
        delayed.close()
        plain.close()
    np.testing.assert_array_equal(s_delayed[k:], s_plain[:-k])
    np.testing.assert_array_equal(s_delayed[0], reset_state)


def test_action_noise_is_seeded_bounded_and_spares_the_gripper():
    acts = _actions(5)
    env = P.ActionNoise(make_lift(cameras=()), strength=1.0, max_std=0.1)
    try:
        _, ex1 = _eef_trajectory(env, acts)
        _, ex2 = _eef_trajectory(env, acts)
    finally:
        env.close()
    ex1, ex2 = np.array(ex1), np.array(ex2)
    np.testing.assert_array_equal(ex1, ex2)
    diff = ex1 - np.array(acts)
    assert np.all(diff[:, 6] == 0) and 0.01 < np.abs(diff[:, :6]).mean() < 0.3
    assert np.all(np.abs(ex1) <= 1.0)


def test_control_rate_hold_repeats_each_action_n_times():
    acts = _actions(3)
    held = P.ControlRate(make_lift(cameras=()), strength=1.0, max_factor=3.0)  # n = 3
    plain = make_lift(cameras=())
    try:
        s_held, _ = _eef_trajectory(held, acts)
        s_plain, _ = _eef_trajectory(plain, [a for a in acts for _ in range(3)])
    finally:
        held.close()
        plain.close()
    np.testing.assert_array_equal(s_held, s_plain[2::3])


def test_control_rate_period_mode_lengthens_the_control_period_and_restores_it():
    env = P.ControlRate(make_lift(cameras=()), strength=1.0, max_factor=2.0, mode="period")
    try:
        sim = env.unwrapped.sim_env
        nominal = sim.control_timestep
        env.reset(seed=0)
        assert int(sim.control_timestep / sim.model_timestep) == 2 * int(round(nominal / sim.model_timestep))
        t0 = sim.sim.data.time
        env.step(np.zeros(7, dtype=np.float32))
        np.testing.assert_allclose(sim.sim.data.time - t0, 2 * nominal, atol=1e-9)
        env.reset(seed=0)  # re-applied, not compounded
        assert int(sim.control_timestep / sim.model_timestep) == 2 * int(round(nominal / sim.model_timestep))
    finally:
        env.close()
