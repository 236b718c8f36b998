"""Trajectory-quality metrics on hand-built trajectories whose values are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_gym import traj_metrics as tm
from vla_gym.chunking import OpenLoopExecutor
from vla_gym.timing import BlockingExecutor

DT = 0.05


def line(T: int, step=(0.01, 0.0, 0.0), start=(0.1, 0.2, 0.3)) -> np.ndarray:
    """T + 1 positions at constant velocity."""
    return np.asarray(start) + np.arange(T + 1)[:, None] * np.asarray(step)


def test_completion_counts_steps_until_first_success_including_waits():
    assert tm.completion(np.array([0, 0, 0, 1, 1], bool), DT) == (4, pytest.approx(0.2))
    assert tm.completion(np.zeros(7, bool), DT) == (7, pytest.approx(0.35))


def test_straight_line_has_efficiency_one_and_its_length():
    p = line(10, step=(0.003, 0.004, 0.0))
    assert tm.path_length(p) == pytest.approx(0.05)
    assert tm.path_efficiency(p) == pytest.approx(1.0)
    # an L: 3 cm along x, then 4 cm along y -> 7 cm travelled, 5 cm apart
    p = np.vstack([line(3, step=(0.01, 0, 0), start=(0, 0, 0)), line(4, step=(0, 0.01, 0), start=(0.03, 0, 0))[1:]])
    assert tm.path_length(p) == pytest.approx(0.07)
    assert tm.path_efficiency(p) == pytest.approx(5 / 7)
    assert math.isnan(tm.path_efficiency(np.zeros((5, 3))))


def test_jerk_is_zero_at_constant_velocity_and_acceleration_and_exact_for_a_cubic():
    assert tm.jerk_rms(line(20), DT) == pytest.approx(0.0, abs=1e-9)
    t = np.arange(21) * DT
    p = np.zeros((21, 3))
    p[:, 1] = 0.5 * 0.3 * t ** 2  # constant acceleration
    assert tm.jerk_rms(p, DT) == pytest.approx(0.0, abs=1e-6)
    p[:, 1] = 0.2 * t ** 3  # third derivative 6 * 0.2 = 1.2 m/s^3 everywhere
    assert tm.jerk_rms(p, DT) == pytest.approx(1.2, rel=1e-6)
    assert math.isnan(tm.jerk_rms(line(2), DT))


def test_action_smoothness_and_chunk_boundary_jumps():
    a = np.zeros((4, 7))
    a[:, 0] = [0.0, 0.1, 0.3, 0.3]
    a[:, 6] = [-1, 1, -1, 1]  # gripper switches are not smoothness
    assert tm.action_smoothness(a) == pytest.approx((0.1 + 0.2 + 0.0) / 3)
    # blocking, 2 steps: hold, hold, a0, hold, hold, a1 -> one boundary, a1 against a0 (holds skipped)
    ex = BlockingExecutor(OpenLoopExecutor(1))
    acts, holds, starts = [], [], []
    for q in range(2):
        for _ in range(3):
            if ex.needs_chunk:
                ex.add_chunk(np.array([[0.2 + 0.3 * q, 0.4 * q, 0, 0, 0, 0, 1]], np.float32), 100.0)
            acts.append(ex.next_action())
            holds.append(ex.last_step.hold)
            starts.append(ex.last_step.chunk_start)
    jumps = tm.chunk_boundary_jumps(np.stack(acts), np.array(starts), np.array(holds))
    np.testing.assert_allclose(jumps, [0.5], rtol=1e-6)  # |(0.3, 0.4)|


def test_oscillation_counts_reversals_per_second_above_the_threshold():
    # a triangle wave along x: 5 steps at +2 cm/step, 5 steps at -2 cm/step, 4 times: 7 reversals in 2 s
    v = np.tile(np.r_[np.full(5, 0.02), np.full(5, -0.02)], 4)
    p = np.zeros((41, 3))
    p[1:, 0] = np.cumsum(v)
    assert tm.oscillation_rate(p, DT) == pytest.approx(7 / 2.0)
    # jitter below the threshold does not count; neither does a pause between two moves the same way
    rng = np.random.default_rng(0)
    still = line(40, step=(0, 0, 0)) + rng.uniform(-1e-4, 1e-4, size=(41, 3))
    assert tm.oscillation_rate(still, DT) == 0.0
    p = np.zeros((21, 3))
    p[1:, 2] = np.cumsum(np.r_[np.full(5, 0.01), np.zeros(10), np.full(5, 0.01)])
    assert tm.oscillation_rate(p, DT) == 0.0


def test_idle_fraction():
    p = np.zeros((41, 3))
    p[11:, 0] = np.cumsum(np.full(30, 0.01))  # 10 still steps, then 30 at 0.2 m/s
    assert tm.idle_fraction(p, DT) == pytest.approx(0.25)


def test_actuator_effort_is_sum_of_squared_forces_times_dt():
    f = np.full((40, 7), 3.0)
    assert tm.actuator_effort(f, DT) == pytest.approx(40 * 7 * 9.0 * DT)
    with pytest.raises(ValueError, match="shape"):
        tm.actuator_effort(np.ones(5), DT)


def test_inference_stats():
    nan = np.nan
    s = tm.inference_stats(np.array([1, 0, 0, 1, 0, 1], bool), np.array([100, nan, nan, 50, nan, 150.0]),
                           stale=np.array([0, 0, 2, 0, 1, 0]), hold=np.array([1, 1, 0, 0, 0, 0], bool))
    assert s == {"queries": 3, "latency_ms_mean": 100.0, "latency_ms_p95": pytest.approx(145.0),
                 "stale_skipped": 3, "hold_steps": 2}


def test_episode_metrics_from_recorded_columns():
    T = 6
    state = np.zeros((T + 1, 8))
    state[:, :3] = line(T)
    traj = {"action": np.zeros((T, 7), np.float32), "success": np.r_[np.zeros(5, bool), True],
            "state": state.astype(np.float32), "query": np.r_[True, np.zeros(5, bool)]}
    m = tm.episode_metrics(traj, DT)
    assert m["completion_steps"] == 6 and m["path_efficiency"] == pytest.approx(1.0)
    assert m["jerk_rms"] == pytest.approx(0.0, abs=1e-3)  # float32 state
    assert m["actuator_effort"] is None and m["latency_ms_mean"] is None  # not recorded
    assert m["chunk_boundary_jump_mean"] is None  # one chunk only
    assert m["queries"] == 1 and m["hold_steps"] == 0
    # the true eef_pos column wins over the (possibly noise-perturbed) observed state
    traj["eef_pos"] = line(T, step=(0, 0.02, 0))
    assert tm.episode_metrics(traj, DT)["path_length_m"] == pytest.approx(0.12)
