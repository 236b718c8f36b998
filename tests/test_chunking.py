"""Chunk execution: open-loop replanning and temporal ensembling against hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from vla_gym.chunking import OpenLoopExecutor, TemporalEnsembleExecutor, make_executor
from vla_gym.policy import Policy, as_chunk


class CountingChunkPolicy(Policy):
    """Returns chunk q (0-based query count): rows [100q + 0, 100q + 1, ...] in every dim."""

    def __init__(self, chunk: int = 4) -> None:
        self.chunk = chunk
        self.queries = 0
        self.resets = 0

    def reset(self, *, seed=None) -> None:
        self.resets += 1

    def act(self, observation):
        base = 100 * self.queries + np.arange(self.chunk, dtype=np.float32)
        self.queries += 1
        return np.repeat(base[:, None], 7, axis=1)


def test_open_loop_executes_replan_steps_then_requeries():
    policy = CountingChunkPolicy(chunk=4)
    ex = OpenLoopExecutor(policy, replan_steps=2)
    firsts = [ex.step({})[0] for _ in range(5)]
    assert firsts == [0, 1, 100, 101, 200]
    assert policy.queries == 3


def test_open_loop_without_replan_steps_executes_whole_chunk():
    ex = OpenLoopExecutor(CountingChunkPolicy(chunk=3))
    assert [ex.step({})[0] for _ in range(4)] == [0, 1, 2, 100]


def test_reset_drops_queued_actions_and_resets_the_policy():
    policy = CountingChunkPolicy(chunk=4)
    ex = OpenLoopExecutor(policy, replan_steps=4)
    ex.step({})
    ex.reset(seed=1)
    assert policy.resets == 1
    assert ex.step({})[0] == 100  # a fresh chunk, not the stale action 1


def test_temporal_ensembling_matches_hand_computed_weights():
    policy = CountingChunkPolicy(chunk=3)
    k = 0.5
    ex = TemporalEnsembleExecutor(policy, k=k)
    # t=0: predictions {q0[0]=0}
    assert ex.step({})[0] == pytest.approx(0.0)
    # t=1: predictions oldest first {q0[1]=1, q1[0]=100}, weights exp(-k*[0,1])
    w = np.exp(-k * np.arange(2))
    assert ex.step({})[0] == pytest.approx((w @ [1, 100]) / w.sum(), rel=1e-6)
    # t=2: {q0[2]=2, q1[1]=101, q2[0]=200}
    w = np.exp(-k * np.arange(3))
    assert ex.step({})[0] == pytest.approx((w @ [2, 101, 200]) / w.sum(), rel=1e-6)
    # t=3: q0 has expired; {q1[2]=102, q2[1]=201, q3[0]=300}
    assert ex.step({})[0] == pytest.approx((w @ [102, 201, 300]) / w.sum(), rel=1e-6)
    ex.reset()
    assert ex.step({})[0] == pytest.approx(400.0)  # history cleared


def test_bad_chunks_and_settings_fail_clearly():
    with pytest.raises(ValueError, match="shape"):
        as_chunk(np.zeros((0, 7)))
    with pytest.raises(ValueError, match="6-D actions; the env expects 7-D"):
        as_chunk(np.zeros((1, 6)), action_dim=7)
    with pytest.raises(ValueError, match="non-finite"):
        as_chunk([0, 0, np.inf, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="replan_steps"):
        OpenLoopExecutor(CountingChunkPolicy(), replan_steps=0)
    with pytest.raises(ValueError, match="unknown chunk execution mode 'ensemble'"):
        make_executor(CountingChunkPolicy(), "ensemble")
