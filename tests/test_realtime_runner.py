"""Execution timing through the real runner (issue 21, "What must hold"): robosuite Lift, a few steps.

The executors are unit-tested in ``tests/test_timing.py``; here the runner's one loop
(:class:`vla_gym.parallel.EnvPool`, N = 1 in process and N = 2 in workers) must execute what they
say, record it in the per-step trajectory, and leave synchronous runs as they were.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import imageio.v2 as imageio
import numpy as np
import pytest

from vla_gym import evaluate
from vla_gym.envs.contract import GRIPPER_OPEN
from vla_gym.policy import ActionChunk, ChunkExecution, Policy, PolicyInfo, PolicyInputs, reset_targets, resolve_env_ids
from vla_gym.records import read_episodes

H = 4  # chunk length of the chunk replay policy


def chunk_row(k: int, i: int) -> np.ndarray:
    """Row ``i`` of the ``k``-th chunk an env gets: small, distinct moves, gripper closing on odd chunks."""
    a = np.zeros(7, dtype=np.float32)
    a[0] = 0.05 * (k + 1)
    a[1] = 0.01 * (i + 1)
    a[6] = 1.0 if k % 2 else -1.0
    return a


class ChunkReplay(Policy):
    """Query ``k`` of each env returns the chunk ``[chunk_row(k, i) for i < H]`` (no cameras)."""

    inputs = PolicyInputs(cameras=())
    execution = ChunkExecution(mode="open_loop", replan_steps=None)

    def __init__(self, replan_steps: int | None = None) -> None:
        self.execution = ChunkExecution(mode="open_loop", replan_steps=replan_steps)
        self.queries: dict[int, int] = {}

    def reset(self, env_ids: Sequence[int] | None = None, seeds=None) -> None:
        if env_ids is None:
            self.queries.clear()
        for env_id, _ in reset_targets(env_ids, seeds):
            self.queries[env_id] = 0

    def act(self, observations, env_ids=None) -> ActionChunk:
        rows = []
        for env_id in resolve_env_ids(observations, env_ids):
            k = self.queries.get(env_id, 0)
            self.queries[env_id] = k + 1
            rows.append(np.stack([chunk_row(k, i) for i in range(H)]))
        return ActionChunk(np.stack(rows))

    def info(self) -> PolicyInfo:
        return PolicyInfo(name="chunk_replay", action_dim=7)


def hold(gripper: float = GRIPPER_OPEN) -> np.ndarray:
    a = np.zeros(7, dtype=np.float32)
    a[6] = gripper
    return a


def run(policy, out: Path, steps: int, overrides: Sequence[str] = (), episodes: int = 1, video: bool = False,
        **options) -> tuple[dict, list]:
    results = evaluate(policy, env="robosuite_lift", episodes=episodes, output_dir=out, overrides=list(overrides),
                       max_steps=steps, video={"enabled": video, "size": 64}, trajectory={"enabled": True},
                       policy_version="test", **options)
    records = sorted(read_episodes(out / "episodes.jsonl"), key=lambda r: r.episode_index)
    assert all(r.error is None for r in records), [r.error for r in records]
    return results, records


def traj(out: Path, record) -> dict[str, np.ndarray]:
    with np.load(out / record.extra["trajectory"]) as z:
        return {k: z[k] for k in z.files}


def frames(out: Path, record) -> np.ndarray:
    return np.stack(imageio.mimread(out / record.video))


def test_blocking_100ms_executes_hold_hold_a0_hold_hold_a1(tmp_path):
    """The issue's example: replay, blocking, fixed 100 ms = 2 steps at 20 Hz."""
    actions = np.zeros((4, 7), dtype=np.float32)
    actions[:, 0] = [0.1, 0.2, 0.3, 0.4]
    actions[:, 6] = [-1, 1, 1, -1]
    np.save(tmp_path / "a.npy", actions)
    out = tmp_path / "run"
    results, (rec,) = run("replay", out, 9, [f"policy.actions={tmp_path / 'a.npy'}", "execution=blocking",
                                             "execution.latency.source=fixed", "execution.latency.ms=100"])
    t = traj(out, rec)
    a0, a1, a2 = actions[:3]
    expected = [hold(), hold(), a0, hold(a0[6]), hold(a0[6]), a1, hold(a1[6]), hold(a1[6]), a2]
    np.testing.assert_array_equal(t["action"], np.stack(expected))
    assert t["hold"].tolist() == [True, True, False] * 3
    assert t["query"].tolist() == [True, False, False] * 3
    assert t["chunk_start"].tolist() == [False, False, True] * 3
    np.testing.assert_array_equal(t["latency_ms"][t["query"]], [100.0] * 3)
    assert t["delay_steps"].tolist() == [2, -1, -1] * 3
    assert t["eef_pos"].shape == (10, 3) and t["actuator_force"].shape == (9, 7)
    m = rec.metrics
    assert m["hold_steps"] == 6 and m["queries"] == 3 and m["latency_ms_mean"] == 100.0
    assert m["completion_steps"] == 9 and m["completion_time_s"] == pytest.approx(0.45)
    assert results["meta"]["execution"]["timing"] == "blocking"
    assert results["overall"]["metrics"]["hold_steps"]["mean"] == 6.0
    assert json.loads((out / "run.json").read_text())["outcome_config"]["execution"]["latency"]["ms"] == 100.0


def test_synchronous_runner_executes_what_a_plain_gym_loop_does(tmp_path):
    """Synchronous = today's behaviour: the runner's executed actions, states and outcome equal a plain
    ``env.step`` loop over the replayed actions (no executor, no probe), bit for bit."""
    import gymnasium as gym

    import vla_gym.envs  # noqa: F401  (registers the ids)

    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.5, 0.5, (6, 7)).astype(np.float32)
    np.save(tmp_path / "a.npy", actions)
    out = tmp_path / "run"
    _, (rec,) = run("replay", out, 6, [f"policy.actions={tmp_path / 'a.npy'}"])
    t = traj(out, rec)
    np.testing.assert_array_equal(t["action"], actions)
    env = gym.make("vla_gym/RobosuiteLift-v1", cameras=(), max_episode_steps=6)
    try:
        obs, _ = env.reset(seed=rec.seed)
        states = [obs["state"]]
        for a in actions:
            obs, *_ = env.step(a)
            states.append(obs["state"])
    finally:
        env.close()
    np.testing.assert_array_equal(t["state"], np.stack(states).astype(np.float32))
    assert t["query"].all() and not t["hold"].any() and "execution" not in json.loads(
        (out / "run.json").read_text())["outcome_config"]  # synchronous run dirs keep their fingerprint
    assert rec.metrics["hold_steps"] == 0 and rec.metrics["stale_skipped"] == 0


@pytest.mark.parametrize("num_envs", [1, 2])
def test_async_replace_fixed_latency_equals_the_hand_computation(tmp_path, num_envs):
    """async, replace, d = 2, chunks of 4, whole chunk executed: hold, hold, then rows 2..3 of each chunk
    (rows 0..1 are stale), a new query whenever 2 actions are left. Each env its own clock (N = 2)."""
    out = tmp_path / "run"
    _, records = run(ChunkReplay(), out, 8, ["execution=async", "execution.handoff=replace",
                                            "execution.latency.ms=100"], episodes=2, num_envs=num_envs)
    c = chunk_row
    expected = np.stack([hold(), hold(), c(0, 2), c(0, 3), c(1, 2), c(1, 3), c(2, 2), c(2, 3)])
    for rec in records:
        t = traj(out, rec)
        np.testing.assert_array_equal(t["action"], expected)
        assert t["query"].tolist() == [True, False, True, False, True, False, True, False]
        assert t["stale"].tolist() == [0, 0, 2, 0, 2, 0, 2, 0]
        assert rec.metrics["stale_skipped"] == 6 and rec.metrics["hold_steps"] == 2


def test_blocking_fixed_latency_equals_the_hand_computation_with_two_envs(tmp_path):
    out = tmp_path / "run"
    _, records = run(ChunkReplay(), out, 11, ["execution=blocking", "execution.latency.ms=60"], episodes=2,
                     num_envs=2)
    c = chunk_row  # 60 ms = 2 steps (ceil(1.2)); each chunk of 4 runs whole, then 2 holds for the next
    g0 = c(0, 3)[6]
    expected = np.stack([hold(), hold(), c(0, 0), c(0, 1), c(0, 2), c(0, 3), hold(g0), hold(g0),
                         c(1, 0), c(1, 1), c(1, 2)])
    for rec in records:
        np.testing.assert_array_equal(traj(out, rec)["action"], expected)


@pytest.mark.parametrize("timing", ["blocking", "async"])
def test_latency_zero_equals_synchronous(tmp_path, timing):
    """Zero latency in a timed mode reproduces the synchronous run: actions, states, outcome, video frames."""
    sync_out, timed_out = tmp_path / "sync", tmp_path / "timed"
    _, (s,) = run(ChunkReplay(replan_steps=2), sync_out, 7, video=True)
    _, (t,) = run(ChunkReplay(replan_steps=2), timed_out, 7, [f"execution={timing}", "execution.latency.ms=0"],
                  video=True)
    ts, tt = traj(sync_out, s), traj(timed_out, t)
    for col in ("action", "query", "reward", "success", "state", "joint_pos", "eef_pos", "actuator_force"):
        np.testing.assert_array_equal(ts[col], tt[col], err_msg=col)
    assert (s.success, s.steps, s.sum_reward) == (t.success, t.steps, t.sum_reward)
    np.testing.assert_array_equal(frames(sync_out, s), frames(timed_out, t))
    assert s.metrics == t.metrics


def test_measured_run_replayed_from_its_trace_gives_identical_records(tmp_path):
    """``measured`` latencies are recorded per query; ``trace`` on that run dir replays them exactly."""
    rec_out, rep_out = tmp_path / "measured", tmp_path / "replay"
    common = ["execution=blocking"]
    # the chunk policy answers in microseconds: scale it up to a few control steps, varying per query
    _, recorded = run(ChunkReplay(), rec_out, 12, [*common, "execution.latency.source=measured",
                                                  "execution.latency.scale=20000"], episodes=2)
    _, replayed = run(ChunkReplay(), rep_out, 12, [*common, "execution.latency.source=trace",
                                                  f"execution.latency.trace={rec_out}"], episodes=2)
    for a, b in zip(recorded, replayed, strict=True):
        ta, tb = traj(rec_out, a), traj(rep_out, b)
        assert ta.keys() == tb.keys()
        for col in ta:
            np.testing.assert_array_equal(ta[col], tb[col], err_msg=col)
        assert (a.success, a.steps, a.sum_reward, a.metrics) == (b.success, b.steps, b.sum_reward, b.metrics)
    lat = np.concatenate([traj(rec_out, r)["latency_ms"] for r in recorded])
    assert np.isfinite(lat).sum() >= 2 and np.nanmax(lat) > 0  # the latencies were measured, not zero


@pytest.mark.parametrize("override, message", [
    ("execution.timing=asynchronous", "execution.timing: unknown 'asynchronous'"),
    ("execution.latency.source=guess", "execution.latency.source: unknown 'guess'"),
])
def test_a_bad_execution_value_is_refused_before_anything_is_written(tmp_path, override, message):
    from vla_gym.plan import ConfigError

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        evaluate("scripted", env="robosuite_lift", episodes=1, output_dir=out, overrides=[override])
    assert not (out / "run.json").exists() and not (out / "episodes.jsonl").exists()


@pytest.mark.slow  # 4 CLI jobs + the report: ~30 s on a loaded 2-core box
def test_latency_sweep_experiment_runs_and_the_report_plots_metrics_vs_latency(tmp_path, subprocess_env):
    """``experiment=latency_sweep`` (cut down to 2 timings x 2 latencies) through the CLI, then the report."""
    import csv
    import subprocess

    from tests.conftest import PYTHON

    sweep = tmp_path / "sweep"
    proc = subprocess.run([PYTHON, "-m", "vla_gym.rollout", "experiment=latency_sweep", "execution.latency.ms=0,100",
                           "episodes_per_task=1", "max_steps=12", f"hydra.sweep.dir={sweep}"],
                          capture_output=True, text=True, env=subprocess_env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metas = [json.loads(p.read_text())["meta"]["execution"] for p in sorted(sweep.glob("*/results.json"))]
    assert sorted((m["timing"], m["latency"]["ms"]) for m in metas) == [
        ("async", 0.0), ("async", 100.0), ("blocking", 0.0), ("blocking", 100.0)]
    report = subprocess.run([PYTHON, "-m", "vla_gym.report", str(sweep), "--out", str(tmp_path / "report")],
                            capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    with (tmp_path / "report" / "summary.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["level"] == "suite"]
    by = {(r["timing"], float(r["latency_ms"])): r for r in rows}
    assert set(by) == {("async", 0.0), ("async", 100.0), ("blocking", 0.0), ("blocking", 100.0)}
    assert float(by[("blocking", 100.0)]["hold_steps"]) > 0 == float(by[("blocking", 0.0)]["hold_steps"])
    assert by[("blocking", 0.0)]["jerk_rms"] == by[("async", 0.0)]["jerk_rms"] != ""  # latency 0: the same run
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Synchronous vs blocking vs async" in md and "latency_success.png" in md
    assert (tmp_path / "report" / "plots" / "latency_jerk_rms.png").stat().st_size > 1000
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'data-filter="timing"' in page and '"timing": "async 100 ms"' in page and "jerk " in page


def test_rtc_is_refused_for_a_policy_without_it(tmp_path):
    from vla_gym.plan import ConfigError

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"handoff 'rtc' \(real-time chunking\) needs a policy that supports it"):
        evaluate("scripted", env="robosuite_lift", episodes=1, output_dir=out,
                 overrides=["execution=async", "execution.handoff=rtc"])
    assert not (out / "run.json").exists()
    with pytest.raises(ConfigError, match="execution.handoff: handoff 'rtc' .* needs execution.timing=async"):
        evaluate("scripted", env="robosuite_lift", episodes=1, output_dir=out,
                 overrides=["execution=blocking", "execution.handoff=rtc"])


@pytest.mark.slow  # three tiny-pi0 runs on the CPU: ~30 s
@pytest.mark.filterwarnings("ignore:.*weights do not match Gemma variant")
def test_rtc_through_the_runner_guides_the_new_chunk_onto_the_executing_one(tmp_path):
    """Tiny pi0 (random weights), async, 100 ms (d = 2), openpi's 5 actions per chunk: a query at step 5
    arrives at step 7. Up to step 6 rtc and replace execute the same first chunk; from step 7 replace
    executes the unguided new chunk, while rtc with the whole overlap guided (schedule ones, beta =
    num_steps, so the guidance is not clipped) follows the first chunk's left-over, i.e. what the
    robot would execute had the first chunk simply continued (``chunk.replan_steps=50``)."""
    from vla_gym.policies.pi0.make_tiny import write_tiny_pi0

    ckpt = write_tiny_pi0(tmp_path / "pi0", "openpi", "pi0")

    def actions(name: str, *overrides: str) -> np.ndarray:
        out = tmp_path / name
        evaluate("pi0", env="robosuite_lift", episodes=1, output_dir=out, max_steps=12, image_size=64,
                 video={"enabled": False}, trajectory={"enabled": True},
                 overrides=[f"policy.checkpoint={ckpt}", "policy.precision=fp32", "policy.device=cpu",
                            "execution=async", "execution.latency.ms=100", *overrides])
        (rec,) = read_episodes(out / "episodes.jsonl")
        assert rec.error is None, rec.error
        return traj(out, rec)["action"]

    replace = actions("replace", "execution.handoff=replace")
    continued = actions("continued", "execution.handoff=replace", "chunk.replan_steps=50")
    rtc = actions("rtc", "execution.handoff=rtc", "execution.rtc.schedule=ones",
                  "execution.rtc.max_guidance_weight=10")
    np.testing.assert_array_equal(rtc[:7], replace[:7])
    np.testing.assert_array_equal(replace[:7], continued[:7])
    unguided = np.abs(replace[7:] - continued[7:]).max()
    guided = np.abs(rtc[7:] - continued[7:]).max()
    assert unguided > 0.3 and guided < 0.01 * unguided, (guided, unguided)  # measured 1e-3 vs 1.9


def test_records_without_metrics_still_load_and_the_spread_skips_undefined_values():
    from vla_gym.records import parse_record
    from vla_gym.results import EpisodeRecord, aggregate

    old = {"suite": "robosuite", "task": "Lift", "task_index": 0, "init_state_id": None, "episode_index": 0,
           "seed": 7, "instruction": "pick up the red cube", "success": True, "steps": 5, "sum_reward": 1.0,
           "wall_s": 1.0}  # a line written before records had metrics
    parsed, unknown = parse_record(json.dumps(old).encode())
    assert parsed.metrics == {} and unknown == []
    recs = [EpisodeRecord(**{**old, "episode_index": i}, metrics=m) for i, m in enumerate(
        [{"jerk_rms": 1.0, "path_efficiency": None}, {"jerk_rms": 3.0, "path_efficiency": 0.5}, {}])]
    recs.append(EpisodeRecord(**{**old, "episode_index": 3}, error="boom", metrics={"jerk_rms": 100.0}))
    m = aggregate(recs)["overall"]["metrics"]
    assert m["jerk_rms"] == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 2}  # errored episode left out
    assert m["path_efficiency"]["n"] == 1 and "metrics" not in aggregate([parsed])["overall"]
