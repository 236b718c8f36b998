"""Parallel env workers (``num_envs``), shards and the in-process entry point."""

from __future__ import annotations

import json
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from tests.test_rollout import LIFT, rollout

VOLATILE = {"wall_s", "latency_ms_mean", "latency_ms_p95"}
"""Record fields that are measurements of this machine, not of the episode."""


def records_by_key(run: Path) -> dict[tuple, dict]:
    out = {}
    for line in (run / "episodes.jsonl").read_text().splitlines():
        r = json.loads(line)
        r = {k: v for k, v in r.items() if k not in VOLATILE}
        r["extra"] = {k: v for k, v in r["extra"].items() if k != "policy_timing_ms"}
        out[(r["suite"], r["task_index"], r["episode_index"], r["init_state_id"])] = r
    return out


def assert_same_episodes(a: Path, b: Path, n: int) -> None:
    ra, rb = records_by_key(a), records_by_key(b)
    assert len(ra) == n and ra == rb
    for r in ra.values():
        assert r["error"] is None
        if r["video"]:  # same frames, decoded
            fa, fb = (np.stack(imageio.mimread(d / r["video"])) for d in (a, b))
            assert fa.shape[0] == r["steps"] + 1 and np.array_equal(fa, fb)
        if r["extra"].get("trajectory"):  # same actions executed, states, rewards, query marks
            ta, tb = (np.load(d / r["extra"]["trajectory"]) for d in (a, b))
            assert sorted(ta.files) == sorted(tb.files)
            assert ta["action"].shape == (r["steps"], 7) and ta["state"].shape == (r["steps"] + 1, 8)
            for k in ta.files:
                np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


def test_two_env_workers_give_the_same_episodes_as_one(tmp_path, subprocess_env):
    """N=2 worker processes vs the in-process N=1 run: same records, actions, states and video frames."""
    args = [*LIFT, "policy=random", "policy.cameras=[agentview,wrist]", "policy.image_size=64", "episodes_per_task=3",
            "max_steps=8", "video.size=64", "video.max_per_task=2", "trajectory.enabled=true"]
    one, two = tmp_path / "n1", tmp_path / "n2"
    rollout([*args, f"hydra.run.dir={one}"], subprocess_env)
    rollout([*args, "num_envs=2", f"hydra.run.dir={two}"], subprocess_env)
    assert_same_episodes(one, two, 3)
    recs = records_by_key(two)
    assert sum(r["video"] is not None for r in recs.values()) == 2  # video.max_per_task honoured
    assert all(r["policy_queries"] == r["steps"] == 8 for r in recs.values())
    res1, res2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert res2["meta"]["num_envs"] == 2 and res1["meta"]["config_fingerprint"] == res2["meta"]["config_fingerprint"]
    assert res1["overall"]["episodes"] == res2["overall"]["episodes"] == 3


@pytest.mark.slow
def test_libero_scripted_expert_same_for_one_and_two_workers(tmp_path, subprocess_env):
    """LIBERO reference scene seeding: an episode's scene does not depend on which worker runs it, or when."""
    args = ["env=libero_spatial", "policy=scripted", "tasks=[0,1]", "episodes_per_task=2", "max_steps=10",
            "video.size=64", "video.max_per_task=1", "trajectory.enabled=true"]
    one, two = tmp_path / "n1", tmp_path / "n2"
    rollout([*args, f"hydra.run.dir={one}"], subprocess_env, timeout=600)
    rollout([*args, "num_envs=2", f"hydra.run.dir={two}"], subprocess_env, timeout=600)
    assert_same_episodes(one, two, 4)


def test_a_crashing_or_stalled_worker_costs_only_its_episode(tmp_path, subprocess_env):
    """os._exit in a worker, an exception in a worker and a hung worker: each episode recorded as an
    error with its reason, the worker replaced, and every other episode runs normally."""
    out = tmp_path / "run"
    faults = "[{_target_:tests.faulty_env.FailOnSeed,exit_on:[8],raise_on:[9],hang_on:[10]}]"
    proc = rollout([*LIFT, "policy=random", "episodes_per_task=5", "max_steps=6", "video.enabled=false",
                    "num_envs=2", "worker_timeout_s=5", f"perturbation.wrappers={faults}", f"hydra.run.dir={out}"],
                   subprocess_env)
    recs = {r["seed"]: r for r in map(json.loads, (out / "episodes.jsonl").read_text().splitlines())}
    assert sorted(recs) == [7, 8, 9, 10, 11]
    assert "WorkerDied" in recs[8]["error"] and "exited with code 3" in recs[8]["error"]
    assert recs[9]["error"] == "RuntimeError: injected fault at step 2"
    assert "WorkerStalled" in recs[10]["error"] and "worker_timeout_s" in recs[10]["error"]
    for seed in (7, 11):
        assert recs[seed]["error"] is None and recs[seed]["steps"] == 6
    assert all(not r["success"] and r["steps"] == 0 for s, r in recs.items() if s in (8, 9, 10))
    assert json.loads((out / "results.json").read_text())["overall"]["errors"] == 3
    assert "overall" in proc.stdout and not (out / "run.lock").exists()


def test_evaluate_from_python_and_shards_that_merge_into_the_unsharded_run(tmp_path):
    """``vla_gym.evaluate`` runs the CLI's loop and store in-process; shard=0/2 + shard=1/2, merged with
    ``vla_gym.merge --out``, hold exactly the episodes (and results) of the unsharded run."""
    import vla_gym
    from vla_gym.merge import main as merge_main
    from vla_gym.policies.random_policy import RandomPolicy

    opts = dict(max_steps=5, video={"enabled": False}, trajectory={"enabled": True})
    full = vla_gym.evaluate("random", env="robosuite_lift", episodes=3, output_dir=tmp_path / "full", **opts)
    assert full["overall"]["episodes"] == 3 and full["meta"]["policy"] == "random"
    for i in range(2):
        part = vla_gym.evaluate("random", env="robosuite_lift", episodes=3, output_dir=tmp_path / f"s{i}",
                                shard=f"{i}/2", **opts)
        assert part["overall"]["episodes"] == (2, 1)[i] and part["meta"]["shard"] == f"{i}/2"
    assert merge_main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "merged")]) == 0
    assert_same_episodes(tmp_path / "full", tmp_path / "merged", 3)
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    drop = {"mean_wall_s", "wall_s", "eval_s", "latency_ms_mean", "latency_ms_p95"}

    def strip(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in drop}

    assert strip(merged["overall"]) == strip(full["overall"])
    assert {k: strip(v) for k, v in merged["per_task"].items()} == {k: strip(v) for k, v in full["per_task"].items()}
    # overlapping shards are refused
    assert merge_main([str(tmp_path / "s0"), str(tmp_path / "full"), "--out", str(tmp_path / "bad")]) == 2

    # a policy object (not a config name), on two env workers: one act call serves both envs.
    # Workers start independently (no lockstep), so episodes must outlast a worker's env build
    # for the two to overlap: a slow policy (0.15 s per call, 40 steps = 6 s) makes them.
    class Recording(RandomPolicy):
        batch_wait_ms = None  # waits for every env mid-step, as a torch model does (RandomPolicy: 0)

        def act(self, observations, env_ids=None):
            self.calls.append(list(env_ids))
            time.sleep(0.15)
            return super().act(observations, env_ids)

    policy = Recording(seed=0)
    policy.calls = []
    res = vla_gym.evaluate(policy, env="robosuite_lift", episodes=2, output_dir=tmp_path / "obj", num_envs=2,
                           max_steps=40, video={"enabled": False})
    assert res["overall"]["episodes"] == 2 and res["overall"]["errors"] == 0 and res["meta"]["num_envs"] == 2
    assert sum(map(len, policy.calls)) == 80  # one chunk per env step (chunk_size 1), 2 x 40 steps
    assert [0, 1] in policy.calls or [1, 0] in policy.calls  # batched across the workers
    assert all(len(c) == len(set(c)) for c in policy.calls)
    from vla_gym.plan import ConfigError

    with pytest.raises(ConfigError, match="shard"):
        vla_gym.evaluate("random", env="robosuite_lift", output_dir=tmp_path / "x", shard="2/2")


def test_worker_egl_devices_are_checked_before_anything_is_written_and_used_by_the_workers(tmp_path):
    """An EGL device index this machine lacks is one clear error before any worker starts (it used to
    fail inside every worker's first render, episode after episode); device 0 renders in both workers."""
    import vla_gym
    from vla_gym.plan import ConfigError, egl_device_count

    count = egl_device_count()
    if count is None:
        pytest.skip("EGL device enumeration is unavailable here")
    opts = dict(env="robosuite_lift", episodes=2, max_steps=3, num_envs=2, video={"enabled": False},
                overrides=("policy.cameras=[agentview]", "policy.image_size=64"))
    with pytest.raises(ConfigError, match=f"{count} EGL device"):
        vla_gym.evaluate("random", output_dir=tmp_path / "bad", worker_egl_devices=[0, count], **opts)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    with pytest.raises(ConfigError, match="worker_egl_devices"):
        vla_gym.evaluate("random", output_dir=tmp_path / "bad2", worker_egl_devices=[], **opts)
    res = vla_gym.evaluate("random", output_dir=tmp_path / "ok", worker_egl_devices=[0], **opts)
    assert res["overall"]["episodes"] == 2 and res["overall"]["errors"] == 0


def test_with_batch_wait_zero_a_fast_env_runs_ahead_of_a_slow_one(tmp_path):
    """Two workers, one env 0.2 s slower per step, a policy declaring ``batch_wait_ms = 0`` (as
    scripted/random/replay do): while both envs are mid-episode, the fast env's policy calls are its
    own, not paired with the slow env's (lockstep batching would pair almost every one; that case is
    covered by the shared-call assertion in the test above)."""
    import vla_gym
    from vla_gym.policies.random_policy import RandomPolicy

    class Timed(RandomPolicy):  # batch_wait_ms = 0, inherited
        def act(self, observations, env_ids=None):
            self.calls.append((time.monotonic(), list(env_ids)))
            return super().act(observations, env_ids)

    policy = Timed(seed=0)
    policy.calls = []
    slow = "[{_target_:tests.faulty_env.SlowOnSeed,seeds:[8],delay_s:0.2}]"  # episode 1 (seed 7 + 1)
    res = vla_gym.evaluate(policy, env="robosuite_lift", episodes=2, output_dir=tmp_path / "run", num_envs=2,
                           max_steps=40, video={"enabled": False}, overrides=(f"perturbation.wrappers={slow}",))
    assert res["overall"]["episodes"] == 2 and res["overall"]["errors"] == 0 and res["meta"]["batch_wait_ms"] == 0
    times = {e: [t for t, ids in policy.calls if e in ids] for e in (0, 1)}
    slow_env = max(times, key=lambda e: times[e][-1] - times[e][0])
    fast_env = 1 - slow_env
    lo, hi = max(times[0][0], times[1][0]), min(times[0][-1], times[1][-1])
    assert lo < hi, "the two episodes never overlapped"
    fast_calls = [ids for t, ids in policy.calls if lo <= t <= hi and fast_env in ids]
    paired = sum(len(ids) == 2 for ids in fast_calls)
    assert len(fast_calls) >= 5 and paired <= 0.5 * len(fast_calls), (paired, len(fast_calls))
