"""Chunk execution: open-loop replanning and temporal ensembling against hand computation, per env."""

from __future__ import annotations

import numpy as np
import pytest

from vla_gym.chunking import ChunkedActor, OpenLoopExecutor, TemporalEnsembleExecutor, make_executor
from vla_gym.policy import ActionChunk, Policy, as_chunk, resolve_env_ids


class CountingChunkPolicy(Policy):
    """Env i's q-th query (0-based) returns rows [1000 i + 100 q + 0, + 1, ...] in every dim."""

    def __init__(self, chunk: int = 4) -> None:
        self.chunk = chunk
        self.queries: dict[int, int] = {}
        self.calls: list[list[int]] = []
        self.resets: list[list[int] | None] = []

    def reset(self, env_ids=None, seeds=None) -> None:
        self.resets.append(None if env_ids is None else list(env_ids))

    def act(self, observations, env_ids=None):
        ids = resolve_env_ids(observations, env_ids)
        self.calls.append(ids)
        rows = []
        for i in ids:
            q = self.queries.get(i, 0)
            self.queries[i] = q + 1
            rows.append(np.repeat((1000 * i + 100 * q + np.arange(self.chunk, dtype=np.float32))[:, None], 7, axis=1))
        return ActionChunk(np.stack(rows))


def drive(executor, policy, env_id, steps):
    """Step one executor against ``policy`` as the runner does; return the first action dims."""
    out = []
    for _ in range(steps):
        if executor.needs_chunk:
            executor.add_chunk(policy.act([{}], env_ids=[env_id]).actions[0])
        out.append(float(executor.next_action()[0]))
    return out


def test_open_loop_executes_replan_steps_then_requeries():
    policy = CountingChunkPolicy(chunk=4)
    assert drive(OpenLoopExecutor(replan_steps=2), policy, 0, 5) == [0, 1, 100, 101, 200]
    assert policy.queries[0] == 3


def test_open_loop_without_replan_steps_executes_whole_chunk():
    assert drive(OpenLoopExecutor(), CountingChunkPolicy(chunk=3), 0, 4) == [0, 1, 2, 100]


def test_reset_drops_queued_actions():
    policy = CountingChunkPolicy(chunk=4)
    ex = OpenLoopExecutor(replan_steps=4)
    drive(ex, policy, 0, 1)
    ex.reset()
    assert drive(ex, policy, 0, 1) == [100]  # a fresh chunk, not the stale action 1
    ex.reset()
    with pytest.raises(RuntimeError, match="add a chunk first"):
        ex.next_action()


def test_temporal_ensembling_matches_hand_computed_weights():
    policy = CountingChunkPolicy(chunk=3)
    k = 0.5
    ex = TemporalEnsembleExecutor(k=k)
    # t=0: predictions {q0[0]=0}
    assert drive(ex, policy, 0, 1)[0] == pytest.approx(0.0)
    # t=1: predictions oldest first {q0[1]=1, q1[0]=100}, weights exp(-k*[0,1])
    w = np.exp(-k * np.arange(2))
    assert drive(ex, policy, 0, 1)[0] == pytest.approx((w @ [1, 100]) / w.sum(), rel=1e-6)
    # t=2: {q0[2]=2, q1[1]=101, q2[0]=200}
    w = np.exp(-k * np.arange(3))
    assert drive(ex, policy, 0, 1)[0] == pytest.approx((w @ [2, 101, 200]) / w.sum(), rel=1e-6)
    # t=3: q0 has expired; {q1[2]=102, q2[1]=201, q3[0]=300}
    assert drive(ex, policy, 0, 1)[0] == pytest.approx((w @ [102, 201, 300]) / w.sum(), rel=1e-6)
    ex.reset()
    assert drive(ex, policy, 0, 1)[0] == pytest.approx(400.0)  # history cleared


def test_actor_queries_only_the_envs_that_need_a_chunk_in_one_call():
    policy = CountingChunkPolicy(chunk=3)
    actor = ChunkedActor(policy, num_envs=3, mode="open_loop", replan_steps=None)
    first = actor.step({0: {}, 1: {}, 2: {}})
    assert policy.calls == [[0, 1, 2]] and {i: a[0] for i, a in first.items()} == {0: 0, 1: 1000, 2: 2000}
    actor.reset(env_ids=[1], seeds=[5])  # env 1 starts a new episode; 0 and 2 keep their plans
    assert policy.resets == [[1]]
    second = actor.step({0: {}, 1: {}, 2: {}})
    assert policy.calls[-1] == [1] and actor.last_call["env_ids"] == [1]
    assert {i: a[0] for i, a in second.items()} == {0: 1, 1: 1100, 2: 2001}
    assert actor.num_queries == [1, 1, 1]  # env 1's count restarted with its episode
    third = actor.step({0: {}, 2: {}})  # env 1 is between episodes: not asked for anything
    assert actor.last_call is None and sorted(third) == [0, 2]


def test_batched_temporal_ensembles_are_independent_per_env():
    policy = CountingChunkPolicy(chunk=3)
    actor = ChunkedActor(policy, num_envs=2, mode="temporal_ensemble", k=0.5)
    single = TemporalEnsembleExecutor(k=0.5)
    reference = CountingChunkPolicy(chunk=3)
    for _ in range(4):
        out = actor.step({0: {}, 1: {}})
        expected = drive(single, reference, 1, 1)[0]
        assert out[1][0] == pytest.approx(expected, rel=1e-6)
    assert all(len(c) == 2 for c in policy.calls)


def test_bad_chunks_and_settings_fail_clearly():
    with pytest.raises(ValueError, match="shape"):
        as_chunk(np.zeros((0, 7)))
    with pytest.raises(ValueError, match="6-D actions; the env expects 7-D"):
        as_chunk(np.zeros((1, 6)), action_dim=7)
    with pytest.raises(ValueError, match="non-finite"):
        as_chunk([0, 0, np.inf, 0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        ActionChunk(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="replan_steps"):
        OpenLoopExecutor(replan_steps=0)
    with pytest.raises(ValueError, match="unknown chunk execution mode 'ensemble'"):
        make_executor("ensemble")
    with pytest.raises(TypeError, match="act_one"):
        CountingChunkPolicy().act({"images": {}})
    with pytest.raises(ValueError, match="distinct"):
        CountingChunkPolicy().act([{}, {}], env_ids=[3, 3])
