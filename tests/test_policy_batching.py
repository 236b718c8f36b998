"""Policy API v2 for the weight-free policies: row b of a batched call equals a B = 1 call (bit-exact)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from vla_gym.policies.random_policy import RandomPolicy
from vla_gym.policies.replay import ReplayPolicy
from vla_gym.policies.scripted import ScriptedPickPlacePolicy
from vla_gym.policy import ActionChunk, act_one


def test_random_policy_rows_do_not_depend_on_the_batch():
    batched, single = RandomPolicy(chunk_size=3), RandomPolicy(chunk_size=3)
    batched.reset(env_ids=[0, 1, 2], seeds=[10, 11, 12])
    single.reset(env_ids=[0, 1, 2], seeds=[10, 11, 12])
    for _ in range(3):
        out = batched.act([{}, {}, {}], env_ids=[0, 1, 2])
        assert isinstance(out, ActionChunk) and out.actions.shape == (3, 3, 7) and out.actions.dtype == np.float32
        for b in (2, 0, 1):  # any order of single calls
            np.testing.assert_array_equal(out.actions[b], act_one(single, {}, env_id=b))
    single.reset(env_ids=[1], seeds=[11])  # a per-env reset restarts only that env's stream
    batched.reset(env_ids=[1], seeds=[11])
    np.testing.assert_array_equal(batched.act([{}], env_ids=[1]).actions[0], act_one(single, {}, env_id=1))


def test_replay_keeps_one_cursor_per_env():
    actions = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    policy = ReplayPolicy(actions)
    policy.reset()
    np.testing.assert_array_equal(policy.act([{}, {}], env_ids=[0, 1]).actions[:, 0], actions[[0, 0]])
    np.testing.assert_array_equal(policy.act([{}], env_ids=[1]).actions[0, 0], actions[1])
    policy.reset(env_ids=[1])
    np.testing.assert_array_equal(policy.act([{}, {}], env_ids=[0, 1]).actions[:, 0], actions[[1, 0]])
    with pytest.raises(IndexError, match="ran out"):
        strict = ReplayPolicy(actions[:1], hold_last=False)
        strict.act([{}])
        strict.act([{}])


def test_scripted_expert_batched_equals_one_env_at_a_time():
    """Two Lift envs with different scenes: one batched expert equals two separate experts."""
    envs = [gym.make("vla_gym/Lift", cameras=(), privileged=True) for _ in range(2)]
    try:
        obs = [env.reset(seed=s)[0] for env, s in zip(envs, (1, 2))]
        batched = ScriptedPickPlacePolicy()
        singles = [ScriptedPickPlacePolicy(), ScriptedPickPlacePolicy()]
        batched.reset(env_ids=[0, 1])
        for _ in range(25):
            out = batched.act(obs, env_ids=[0, 1]).actions
            for b in range(2):
                np.testing.assert_array_equal(out[b], act_one(singles[b], obs[b]))
            obs = [env.step(out[b, 0])[0] for b, env in enumerate(envs)]
    finally:
        for env in envs:
            env.close()
