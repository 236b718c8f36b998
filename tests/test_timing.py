"""Execution timing (blocking / async, simulated latency) against hand-computed action sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_gym.chunking import OpenLoopExecutor, TemporalEnsembleExecutor
from vla_gym.timing import (
    AsyncExecutor,
    BlockingExecutor,
    delay_steps,
    hold_action,
    make_timed_executor,
    step_record,
    submit,
)

H = "hold"


def chunk(env: int, q: int, length: int) -> np.ndarray:
    """Env ``env``'s ``q``-th chunk: row j is ``1000 env + 100 q + j`` in the six arm dims, gripper closed."""
    rows = np.zeros((length, 7), dtype=np.float32)
    rows[:, :6] = (1000 * env + 100 * q + np.arange(length, dtype=np.float32))[:, None]
    rows[:, 6] = 1.0
    return rows


def drive(ex, steps: int, length: int, latency_ms=0.0, env: int = 0):
    """The loop contract for one env: query when asked, then one action per step; a replay-like chunk sequence.

    Returns the executed actions, each tagged ``hold`` (a :class:`Held` array) when the executor held.
    """
    lat = latency_ms if callable(latency_ms) else (lambda q: latency_ms)
    actions, records, q = [], [], 0
    for _ in range(steps):
        if ex.needs_chunk:
            submit(ex, chunk(env, q, length), lat(q))
            q += 1
        a = ex.next_action()
        rec = step_record(ex, queried=False)
        if rec.hold:
            assert not a[:6].any()  # zero motion
            a = a.view(Held)
        actions.append(a)
        records.append(rec)
    return actions, records


class Held(np.ndarray):
    """Marks an executed action that was the executor's hold."""


def labels(actions) -> list:
    """``hold`` for the no-op, else the row's label (dim 0)."""
    return [H if isinstance(a, Held) else int(a[0]) for a in actions]


def test_delay_steps_is_the_ceiling_of_latency_over_the_control_period():
    assert [delay_steps(ms) for ms in (0, 1, 49.9, 50, 50.1, 100, 150, 0.1 * 1000)] == [0, 1, 1, 1, 2, 2, 3, 2]
    assert delay_steps(100, control_period_ms=1000 / 30) == 3
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="latency must be"):
            delay_steps(bad)


def test_blocking_100ms_at_20hz_holds_twice_before_each_action():
    """The issue's example: a replay policy (one action per query), 100 ms = 2 steps at 20 Hz."""
    ex = BlockingExecutor(OpenLoopExecutor(replan_steps=1))
    actions, recs = drive(ex, 9, length=1, latency_ms=100.0)
    assert labels(actions) == [H, H, 0, H, H, 100, H, H, 200]
    # hold = zero motion with the gripper unchanged: open before anything ran, then as last executed
    np.testing.assert_array_equal(actions[0], hold_action(-1.0))
    np.testing.assert_array_equal(actions[3], hold_action(1.0))
    assert [r.query for r in recs] == [True, False, False] * 3
    assert [r.delay_steps for r in recs[:3]] == [2, -1, -1]
    assert [r.hold for r in recs] == [True, True, False] * 3
    assert [r.chunk_start for r in recs] == [False, False, True] * 3


def test_blocking_runs_the_whole_plan_of_each_chunk_after_the_wait():
    ex = BlockingExecutor(OpenLoopExecutor(replan_steps=3))
    actions, _ = drive(ex, 9, length=5, latency_ms=50.0)
    assert labels(actions) == [H, 0, 1, 2, H, 100, 101, 102, H]


def test_async_replace_with_fixed_delay_matches_hand_computation():
    # d = 1, chunks of 4: query at 0 -> arrives at 1 (row 0 stale); next query when d = 1 action is left
    actions, recs = drive(AsyncExecutor("replace"), 8, length=4, latency_ms=50.0)
    assert labels(actions) == [H, 1, 2, 3, 101, 102, 103, 201]
    assert [r.query for r in recs] == [True, False, False, True, False, False, True, False]
    assert [r.stale for r in recs] == [0, 1, 0, 0, 1, 0, 0, 1]
    assert [r.chunk_start for r in recs] == [False, True, False, False, True, False, False, True]
    # d = 2: the old chunk's last two actions run while the next is computed
    actions, recs = drive(AsyncExecutor("replace"), 9, length=4, latency_ms=100.0)
    assert labels(actions) == [H, H, 2, 3, 102, 103, 202, 203, 302]
    assert sum(r.hold for r in recs) == 2 and sum(r.stale for r in recs) == 8


def test_async_with_execution_horizon_requeries_every_s_steps():
    # openpi-style s = 3 of a 6-action chunk, d = 1: query every 3 steps, the old chunk runs on meanwhile
    actions, recs = drive(AsyncExecutor("replace", replan_steps=3), 10, length=6, latency_ms=50.0)
    assert labels(actions) == [H, 1, 2, 3, 101, 102, 103, 201, 202, 203]
    assert [i for i, r in enumerate(recs) if r.query] == [0, 3, 6, 9]


def test_async_holds_when_the_old_chunk_runs_out_first():
    # trigger when 0 left, latency 2 steps: each chunk ends, then two holds (its first two rows stale)
    actions, _ = drive(AsyncExecutor("replace", trigger_remaining=0), 10, length=4, latency_ms=100.0)
    assert labels(actions) == [H, H, 2, 3, H, H, 102, 103, H, H]


def test_async_chunk_not_longer_than_the_delay_executes_its_last_row_late():
    # d = 3, chunks of 2: rows 0..1 are past at arrival; row 1 runs at arrival (one stale), then holds
    actions, recs = drive(AsyncExecutor("replace"), 7, length=2, latency_ms=150.0)
    assert labels(actions) == [H, H, H, 1, H, H, 101]
    assert [r.stale for r in recs] == [0, 0, 0, 1, 0, 0, 1]
    # a single-action policy (the scripted expert, OpenVLA) pipelines its queries: one action every d steps
    actions, _ = drive(AsyncExecutor("replace"), 7, length=1, latency_ms=100.0)
    assert labels(actions) == [H, H, 0, H, 100, H, 200]


def test_async_temporal_ensemble_averages_the_overlap():
    # trigger at 3 left, d = 1, chunks of 4: at step 2 chunks 0 and 1 both cover the step
    actions, _ = drive(AsyncExecutor("temporal_ensemble", trigger_remaining=3, k=0.5), 4, length=4, latency_ms=50.0)
    w = np.exp(-0.5 * np.arange(2))
    w /= w.sum()
    assert labels(actions[:2]) == [H, 1]
    np.testing.assert_allclose(actions[2][0], w[0] * 2 + w[1] * 101, rtol=1e-6)  # q0 row 2, q1 row 1
    # step 3: q0 row 3, q1 row 2, q2 row 1 (oldest weighs most)
    w3 = np.exp(-0.5 * np.arange(3))
    w3 /= w3.sum()
    np.testing.assert_allclose(actions[3][0], w3 @ [3, 102, 201], rtol=1e-6)
    # the same trigger with replace: always the newest chunk
    actions, _ = drive(AsyncExecutor("replace", trigger_remaining=3), 4, length=4, latency_ms=50.0)
    assert labels(actions) == [H, 1, 101, 201]


@pytest.mark.parametrize("mode,replan,length", [("open_loop", 1, 1), ("open_loop", 2, 4), ("open_loop", None, 3),
                                                ("open_loop", 5, 3), ("temporal_ensemble", None, 4)])
@pytest.mark.parametrize("timing", ["blocking", "async"])
def test_zero_latency_equals_synchronous(timing, mode, replan, length):
    sync, _ = drive(make_timed_executor("synchronous", mode=mode, replan_steps=replan, k=0.1), 12, length)
    timed, recs = drive(make_timed_executor(timing, mode=mode, replan_steps=replan, k=0.1), 12, length)
    assert np.array_equal(np.stack(sync), np.stack(timed))  # bit for bit
    assert not any(r.hold or r.stale for r in recs)


def test_synchronous_is_todays_executor_and_its_records_come_from_the_query_flag():
    assert type(make_timed_executor("synchronous", replan_steps=2)) is OpenLoopExecutor
    assert type(make_timed_executor("synchronous", mode="temporal_ensemble")) is TemporalEnsembleExecutor
    rec = step_record(OpenLoopExecutor(), queried=True, latency_ms=12.0)
    assert rec.query and rec.chunk_start and rec.delay_steps == 0 and rec.latency_ms == 12.0
    assert not step_record(OpenLoopExecutor(), queried=False).query


def test_each_env_keeps_its_own_clock_under_batched_queries():
    """Two envs, one batched policy call per step for those that need a chunk, different latencies."""
    lat = {0: 50.0, 1: 150.0}
    exs = {i: AsyncExecutor("replace") for i in lat}
    q = dict.fromkeys(lat, 0)
    out: dict[int, list] = {0: [], 1: []}
    for _ in range(10):
        need = [i for i in exs if exs[i].needs_chunk]
        for i in need:  # rows of one batched call
            exs[i].add_chunk(chunk(i, q[i], 4), lat[i])
            q[i] += 1
        for i in exs:
            out[i].append(exs[i].next_action())
    for i in lat:
        alone, _ = drive(AsyncExecutor("replace"), 10, 4, lat[i], env=i)
        assert np.array_equal(np.stack(out[i]), np.stack(alone))


def test_varying_latency_is_applied_per_query():
    # d = 1 then 3: the default trigger follows the largest recent delay
    actions, recs = drive(AsyncExecutor("replace"), 8, length=6, latency_ms=lambda q: [50.0, 150.0, 50.0][q])
    assert [r.delay_steps for r in recs if r.query] == [1, 3]
    assert labels(actions) == [H, 1, 2, 3, 4, 5, H, H]  # query 1 at step 5 (1 left) arrives at 8


def test_reset_drops_the_chunk_in_flight():
    for ex in (AsyncExecutor(), BlockingExecutor(OpenLoopExecutor(1))):
        drive(ex, 1, length=2, latency_ms=200.0)
        ex.reset()
        assert ex.t == 0 and ex.needs_chunk
        actions, _ = drive(ex, 1, length=2, latency_ms=0.0)
        assert labels(actions) == [0]


def test_unrequested_chunks_and_bad_values_are_refused():
    ex = BlockingExecutor(OpenLoopExecutor(1))
    ex.add_chunk(chunk(0, 0, 1), 100.0)
    with pytest.raises(RuntimeError, match="did not ask"):
        ex.add_chunk(chunk(0, 1, 1), 100.0)
    ex = AsyncExecutor()
    ex.add_chunk(chunk(0, 0, 1), 100.0)
    with pytest.raises(RuntimeError, match="in flight"):
        ex.add_chunk(chunk(0, 1, 1), 100.0)
    with pytest.raises(ValueError, match="needs execution.timing=async"):
        make_timed_executor("blocking", handoff="rtc")
    assert AsyncExecutor("rtc").handoff == "rtc"  # executed as replace; the policy guides the chunks
    with pytest.raises(ValueError, match="unknown execution.timing 'asynchronous'"):
        make_timed_executor("asynchronous")
    with pytest.raises(ValueError, match="trigger_remaining"):
        AsyncExecutor(trigger_remaining=-1)
    with pytest.raises(ValueError, match="unknown chunk execution mode"):
        make_timed_executor("async", mode="bogus")


# ---------------------------------------------------------------------------- TimedActor (N = 1, 2)
class CountingPolicy:
    """Env i's q-th query returns :func:`chunk` ``(i, q, length)``; records who shared each call."""

    def __init__(self, length: int) -> None:
        self.length, self.q, self.calls = length, {}, []

    def reset(self, env_ids=None, seeds=None) -> None:
        for i in env_ids if env_ids is not None else list(self.q):
            self.q[i] = 0

    def act(self, observations, env_ids=None):
        from vla_gym.policy import ActionChunk

        self.calls.append(list(env_ids))
        rows = []
        for i in env_ids:
            rows.append(chunk(i, self.q.get(i, 0), self.length))
            self.q[i] = self.q.get(i, 0) + 1
        return ActionChunk(np.stack(rows))


def run_actor(actor, n_envs: int, steps: int):
    actor.reset(env_ids=list(range(n_envs)), seeds=list(range(n_envs)))
    out = {i: [] for i in range(n_envs)}
    for _ in range(steps):
        for i, a in actor.step({i: {} for i in range(n_envs)}).items():
            rec = actor.records[i] if hasattr(actor, "records") else None
            out[i].append(a.view(Held) if rec is not None and rec.hold else a)
    return out


def test_timed_actor_replay_policy_blocking_100ms():
    from vla_gym.latency_sources import FixedLatency
    from vla_gym.policies.replay import ReplayPolicy
    from vla_gym.timing import TimedActor

    recorded = np.zeros((3, 7), np.float32)
    recorded[:, 0] = [0.1, 0.2, 0.3]
    actor = TimedActor(ReplayPolicy(recorded), [make_timed_executor("blocking", replan_steps=1)], [FixedLatency(100)])
    out = run_actor(actor, 1, 9)[0]
    assert [H if isinstance(a, Held) else round(float(a[0]), 3) for a in out] == [H, H, 0.1, H, H, 0.2, H, H, 0.3]


@pytest.mark.parametrize("n_envs", [1, 2])
def test_timed_actor_fixed_delay_replace_matches_hand_computation(n_envs):
    from vla_gym.latency_sources import FixedLatency
    from vla_gym.timing import TimedActor

    policy = CountingPolicy(length=4)
    actor = TimedActor(policy, [make_timed_executor("async") for _ in range(n_envs)],
                       [FixedLatency(100) for _ in range(n_envs)])
    out = run_actor(actor, n_envs, 9)
    for i in range(n_envs):  # d = 2: as in test_async_replace_with_fixed_delay_matches_hand_computation
        assert [H if isinstance(a, Held) else int(a[0]) - 1000 * i for a in out[i]] == [H, H, 2, 3, 102, 103, 202,
                                                                                       203, 302]
    assert policy.calls == [list(range(n_envs))] * 5  # queries at steps 0, 2, 4, 6, 8; the envs share each call


def test_timed_actor_with_synchronous_executors_equals_chunked_actor():
    from vla_gym.chunking import ChunkedActor
    from vla_gym.timing import TimedActor

    ref = run_actor(ChunkedActor(CountingPolicy(3), num_envs=2, replan_steps=2), 2, 7)
    got = run_actor(TimedActor(CountingPolicy(3), [make_timed_executor(replan_steps=2) for _ in range(2)]), 2, 7)
    for i in range(2):
        assert np.array_equal(np.stack(ref[i]), np.stack(got[i]))
