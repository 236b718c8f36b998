"""Versioned Gymnasium ids, with the ids before versioning kept as deprecated aliases that warn once."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest

from vla_gym.envs import DEPRECATED_IDS, env_id
from vla_gym.envs import suite as suite_mod


def test_every_env_has_a_versioned_id_and_its_old_id_is_an_alias_with_the_same_limits():
    assert env_id("libero_spatial") == "vla_gym/LiberoSpatial-v1" and env_id("Lift") == "vla_gym/RobosuiteLift-v1"
    assert len(DEPRECATED_IDS) == len(set(DEPRECATED_IDS.values())) >= 10
    for old, new in DEPRECATED_IDS.items():
        assert gym.spec(old).max_episode_steps == gym.spec(new).max_episode_steps, old


def test_an_old_id_builds_the_same_env_and_warns_once(monkeypatch):
    monkeypatch.setattr(suite_mod, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        envs = [gym.make("vla_gym/Lift", cameras=(), privileged=True) for _ in range(2)]
        described = suite_mod.describe("vla_gym/Lift", {})
    try:
        assert all(type(e.unwrapped).__name__ == "RobosuiteEnv" and e.unwrapped.task_name == "Lift" for e in envs)
        assert envs[0].spec.max_episode_steps == 300
        ours = [w for w in caught if issubclass(w.category, FutureWarning)]
        assert len(ours) == 1 and "'vla_gym/RobosuiteLift-v1'" in str(ours[0].message)
        assert described == suite_mod.describe("vla_gym/RobosuiteLift-v1", {})
    finally:
        for e in envs:
            e.close()


@pytest.mark.parametrize("old", ["vla_gym/Lift", "vla_gym/libero_spatial"])
def test_a_run_dir_made_with_the_old_id_resumes_with_the_new_one(old):
    from vla_gym.run_store import fingerprint, outcome_config

    new = DEPRECATED_IDS[old]
    assert fingerprint(outcome_config({"env": {"id": new}})) == fingerprint(outcome_config({"env": {"id": old}}))
