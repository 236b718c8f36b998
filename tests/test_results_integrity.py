"""Results that can never be wrong silently (issue 20, items 1-7).

Each test here failed on the main branch before the fix: a reader counted an episode twice, a
resume returned stale results, a bad value ran every episode into an error and exited 0, a
refused run rewrote ``.hydra/``, a merge of missing shards looked complete, a sweep stopped at
its first invalid job.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PYTHON
from tests.test_rollout import LIFT, rollout
from vla_gym.policies.replay import ReplayPolicy
from vla_gym.results import EpisodeRecord

SCENE = {"seeding": "reference", "seed": 0, "index": 0}
QUICK = dict(env="robosuite_lift", episodes=1, max_steps=2, video={"enabled": False})


def _rec(episode_index: int, success: bool = True, **kw) -> EpisodeRecord:
    return EpisodeRecord(suite="libero_spatial", task="t0", task_index=0, init_state_id=episode_index,
                         episode_index=episode_index, seed=7 + episode_index, instruction="do it", success=success,
                         steps=10, sum_reward=float(success), wall_s=1.0, policy="random",
                         extra={"scene": {**SCENE, "index": episode_index}}, **kw)


def _run_dir(path: Path, records: list[EpisodeRecord], fingerprint: str = "f" * 16, shard: str | None = None,
             planned: int | None = None) -> Path:
    """A run directory as the runner writes it: run.json, episodes.jsonl, results.json."""
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"config_fingerprint": fingerprint, "outcome_config": {"seed": 7}}))
    (path / "episodes.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
    meta = {"policy": "random", "shard": shard}
    if planned is not None:
        meta["planned_episodes"] = planned
    (path / "results.json").write_text(json.dumps({"meta": meta}))
    return path


def _count(paths) -> int:
    from vla_gym.report.load import all_episodes, load_runs

    return len(all_episodes(load_runs(paths)))


# ---------------------------------------------------------------------------- 1. double counting
def test_a_duplicated_line_is_counted_once_by_the_report(tmp_path, capsys):
    run = _run_dir(tmp_path / "run", [_rec(0), _rec(0), _rec(1)])
    assert _count([run]) == 2
    assert "duplicate" in capsys.readouterr().err  # said, not silent


def test_a_merged_dir_and_its_shards_are_never_counted_together(tmp_path):
    from vla_gym.merge import main as merge_main

    sweep = tmp_path / "sweep"
    _run_dir(sweep / "0", [_rec(0), _rec(2)], shard="0/2", planned=2)
    _run_dir(sweep / "1", [_rec(1), _rec(3)], shard="1/2", planned=2)
    assert merge_main(["--out", str(sweep / "merged"), str(sweep)]) == 0  # the README's pattern
    assert _count([sweep]) == 4  # not 8
    assert _count([sweep / "merged"]) == 4


def test_a_resubmitted_shard_in_a_second_job_dir_counts_once(tmp_path):
    _run_dir(tmp_path / "sweep" / "0", [_rec(0), _rec(1)], shard="0/1")
    _run_dir(tmp_path / "sweep" / "1", [_rec(0), _rec(1)], shard="0/1")  # same config, run again
    assert _count([tmp_path / "sweep"]) == 2


def test_runs_of_different_configs_are_all_counted(tmp_path):
    """The de-duplication is by episode key within one config, never across configs."""
    _run_dir(tmp_path / "sweep" / "0", [_rec(0), _rec(1)], fingerprint="a" * 16)
    _run_dir(tmp_path / "sweep" / "1", [_rec(0), _rec(1)], fingerprint="b" * 16)
    assert _count([tmp_path / "sweep"]) == 4


def test_a_conflict_is_an_error_naming_both_files(tmp_path):
    from vla_gym.report.load import ReportInputError

    a = _run_dir(tmp_path / "sweep" / "0", [_rec(0, success=True)])
    b = _run_dir(tmp_path / "sweep" / "1", [_rec(0, success=False)])
    with pytest.raises(ReportInputError) as e:
        _count([tmp_path / "sweep"])
    assert str(a / "episodes.jsonl") in str(e.value) and str(b / "episodes.jsonl") in str(e.value)
    c = _run_dir(tmp_path / "one", [_rec(0, success=True), _rec(0, success=False)])
    with pytest.raises(ReportInputError, match=f"{c / 'episodes.jsonl'}:1 .*{c / 'episodes.jsonl'}:2"):
        _count([c])


def test_merge_without_out_counts_each_episode_once(tmp_path, capsys):
    from vla_gym.merge import main as merge_main

    _run_dir(tmp_path / "sweep" / "0", [_rec(0), _rec(1), _rec(1)])
    _run_dir(tmp_path / "sweep" / "1", [_rec(0), _rec(1)])
    assert merge_main([str(tmp_path / "sweep"), "--csv", str(tmp_path / "m.csv")]) == 0
    header, row = (tmp_path / "m.csv").read_text().splitlines()
    assert dict(zip(header.split(","), row.split(",")))["episodes"] == "2"


# ---------------------------------------------------------------------------- 2. evaluate() weights
def test_evaluate_into_a_reused_dir_does_not_return_a_retrained_policys_stale_results(tmp_path):
    import vla_gym
    from vla_gym.policies.random_policy import RandomPolicy
    from vla_gym.run_store import RunStoreError

    out = tmp_path / "run"
    first = vla_gym.evaluate(RandomPolicy(seed=0), output_dir=out, **QUICK)
    assert first["overall"]["episodes"] == 1
    with pytest.raises(RunStoreError, match="policy_version="):  # nothing identifies the weights: no resume
        vla_gym.evaluate(RandomPolicy(seed=0), output_dir=out, **QUICK)
    versioned = tmp_path / "versioned"
    vla_gym.evaluate(RandomPolicy(seed=0), output_dir=versioned, policy_version="step-1", **QUICK)
    again = vla_gym.evaluate(RandomPolicy(seed=0), output_dir=versioned, policy_version="step-1", **QUICK)
    assert again["overall"]["episodes"] == 1  # same version: resumed
    with pytest.raises(RunStoreError, match="step-1.*step-2"):  # a new version never reuses the old results
        vla_gym.evaluate(RandomPolicy(seed=0), output_dir=versioned, policy_version="step-2", **QUICK)


class CheckpointReplay(ReplayPolicy):
    """Stands for a policy loading ``checkpoint`` (here: an (N, 7) .npy of actions played back)."""

    def __init__(self, checkpoint: str, **_: object) -> None:
        super().__init__(actions=checkpoint)


def test_evaluate_fingerprints_the_content_of_the_checkpoint(tmp_path):
    import vla_gym
    from vla_gym.run_store import RunStoreError

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    np.save(ckpt / "weights.npy", np.zeros((4, 7), dtype=np.float32))
    policy = (f"policy._target_={__name__}.CheckpointReplay", f"+policy.checkpoint={ckpt / 'weights.npy'}")
    opts = dict(output_dir=tmp_path / "run", overrides=policy, **QUICK)
    vla_gym.evaluate("random", **opts)
    assert vla_gym.evaluate("random", **opts)["overall"]["episodes"] == 1  # same weights: resumed
    np.save(ckpt / "weights.npy", np.ones((4, 7), dtype=np.float32))  # retrained in place
    with pytest.raises(RunStoreError, match="weights.files.checkpoint"):
        vla_gym.evaluate("random", **opts)


class StatsReplay(CheckpointReplay):
    """A family whose outputs also depend on a separate file (as TinyVLA's ``stats``, OFT's ``lora_adapter``)."""

    weight_paths = ("checkpoint", "stats")

    def __init__(self, checkpoint: str, stats: str | None = None, **_: object) -> None:
        super().__init__(checkpoint)


def test_evaluate_fingerprints_every_path_the_family_declares(tmp_path):
    import vla_gym
    from vla_gym.run_store import RunStoreError

    np.save(tmp_path / "weights.npy", np.zeros((4, 7), dtype=np.float32))
    (tmp_path / "stats.json").write_text('{"mean": 0}')
    policy = (f"policy._target_={__name__}.StatsReplay", f"+policy.checkpoint={tmp_path / 'weights.npy'}",
              f"+policy.stats={tmp_path / 'stats.json'}")
    opts = dict(output_dir=tmp_path / "run", overrides=policy, **QUICK)
    vla_gym.evaluate("random", **opts)
    assert vla_gym.evaluate("random", **opts)["overall"]["episodes"] == 1  # same files: resumed
    (tmp_path / "stats.json").write_text('{"mean": 1}')  # new stats beside the same weights
    with pytest.raises(RunStoreError, match="weights.files.stats"):
        vla_gym.evaluate("random", **opts)


# ---------------------------------------------------------------------------- 3. unguarded __main__
def test_evaluate_with_workers_from_an_unguarded_script_fails_at_once_with_the_fix(tmp_path, subprocess_env):
    script = tmp_path / "eval_script.py"
    script.write_text(textwrap.dedent(f"""
        import vla_gym
        results = vla_gym.evaluate("random", env="robosuite_lift", episodes=2, output_dir={str(tmp_path / 'run')!r},
                                   num_envs=2, max_steps=2, video={{"enabled": False}})
        print(results["overall"]["pc_success"])
    """))
    proc = subprocess.run([PYTHON, str(script)], capture_output=True, text=True, env=subprocess_env,
                          timeout=180, cwd=tmp_path)
    assert proc.returncode != 0
    assert 'if __name__ == "__main__":' in proc.stderr.strip().splitlines()[-1]
    assert "pc_success" not in proc.stdout and not (tmp_path / "run" / "episodes.jsonl").exists()
    assert not (tmp_path / "rollouts").exists()  # no stray second run dir


def test_the_guard_check_accepts_a_guarded_call(tmp_path):
    from vla_gym.rollout import unguarded_main_line

    src = "import x\nif __name__ == '__main__':\n    x.evaluate()\nx.evaluate()\n"
    (tmp_path / "s.py").write_text(src)
    assert unguarded_main_line(str(tmp_path / "s.py"), 3) is False
    assert unguarded_main_line(str(tmp_path / "s.py"), 4) is True


# ---------------------------------------------------------------------------- 4 + 7. validation
# seed=-5, render_quality=bogus, video.size=0, chunk.*, strength without a perturbation: the cases of
# tests/test_run_store.py::test_bad_configs_are_refused_in_one_line_before_anything_runs.
@pytest.mark.parametrize("override", ["chunk.mode=bogus", "seed=-5"])
def test_a_bad_value_is_one_line_without_a_traceback_and_the_fixed_command_then_runs(tmp_path, subprocess_env,
                                                                                     override):
    out = tmp_path / "run"
    args = [*LIFT, "policy=random", "episodes_per_task=1", "max_steps=2", "video.enabled=false", f"hydra.run.dir={out}"]
    proc = rollout([*args, override], subprocess_env, check=False, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    rollout(args, subprocess_env)  # nothing was fingerprinted: the corrected command runs in that dir


def test_a_run_whose_episodes_all_errored_exits_non_zero(tmp_path, subprocess_env):
    actions = tmp_path / "actions.npy"
    np.save(actions, np.zeros((2, 7), dtype=np.float32))  # runs out at step 3: every episode an IndexError
    out = tmp_path / "run"
    proc = rollout([*LIFT, "policy=replay", f"policy.actions={actions}", "policy.hold_last=false",
                    "episodes_per_task=2", "max_steps=5", "video.enabled=false", f"hydra.run.dir={out}"],
                   subprocess_env, check=False)
    assert proc.returncode != 0
    assert "all 2 episodes errored" in proc.stderr and "IndexError" in proc.stderr
    assert json.loads((out / "results.json").read_text())["overall"]["errors"] == 2  # still recorded


# ---------------------------------------------------------------------------- 5. refused runs change nothing
def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_a_refused_run_changes_nothing_in_the_run_dir(tmp_path, subprocess_env):
    from vla_gym.run_store import RunLock

    out = tmp_path / "run"
    args = [*LIFT, "policy=random", "episodes_per_task=1", "max_steps=2", "video.enabled=false", f"hydra.run.dir={out}"]
    rollout(args, subprocess_env)
    before = _snapshot(out)
    assert ".hydra/config.yaml" in before and ".hydra/overrides.yaml" in before
    mismatch = rollout([*args, "policy.scale=0.5"], subprocess_env, check=False)
    assert mismatch.returncode != 0 and "different config" in mismatch.stderr
    assert _snapshot(out) == before
    with RunLock(out):
        locked = rollout([*args, "episodes_per_task=2"], subprocess_env, check=False)
        assert locked.returncode != 0 and "in use by another run" in locked.stderr
        assert {k: v for k, v in _snapshot(out).items() if k != "run.lock"} == before


# ---------------------------------------------------------------------------- 6. partial merges
def test_merge_out_refuses_missing_shards_unless_allow_partial(tmp_path, capsys):
    from vla_gym.merge import main as merge_main

    s0 = _run_dir(tmp_path / "s0", [_rec(0)], shard="0/4", planned=1)
    s2 = _run_dir(tmp_path / "s2", [_rec(2)], shard="2/4", planned=1)
    assert merge_main([str(s0), str(s2), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "1/4" in err and "3/4" in err and "--allow-partial" in err
    assert not (tmp_path / "m").exists()
    assert merge_main([str(s0), str(s2), "--out", str(tmp_path / "m"), "--allow-partial"]) == 0
    results = json.loads((tmp_path / "m" / "results.json").read_text())
    assert results["meta"]["partial"] is True and results["meta"]["missing_shards"] == ["1/4", "3/4"]
    assert json.loads((tmp_path / "m" / "run.json").read_text())["partial"] is True


def test_merge_out_refuses_a_shard_that_did_not_finish(tmp_path, capsys):
    from vla_gym.merge import main as merge_main

    s0 = _run_dir(tmp_path / "s0", [_rec(0)], shard="0/2", planned=2)  # killed after 1 of its 2 episodes
    s1 = _run_dir(tmp_path / "s1", [_rec(1)], shard="1/2", planned=1)
    assert merge_main([str(s0), str(s1), "--out", str(tmp_path / "m")]) == 2
    assert "0/2" in capsys.readouterr().err


# ---------------------------------------------------------------------------- 7. sweeps, fewer episodes
def test_an_invalid_job_in_a_multirun_does_not_stop_the_valid_ones(tmp_path, subprocess_env):
    sweep = tmp_path / "sweep"
    proc = rollout(["-m", *LIFT, "policy=random", "episodes_per_task=0,1", "max_steps=2", "video.enabled=false",
                    f"hydra.sweep.dir={sweep}"], subprocess_env, check=False, timeout=300)
    assert proc.returncode != 0
    assert "episodes_per_task must be >= 1" in proc.stderr and "Traceback" not in proc.stderr
    results = sorted(sweep.glob("*/results.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["overall"]["episodes"] == 1


def test_rerunning_with_fewer_episodes_says_so(tmp_path, capsys):
    import vla_gym

    out = tmp_path / "run"
    vla_gym.evaluate("random", output_dir=out, **{**QUICK, "episodes": 2})
    res = vla_gym.evaluate("random", output_dir=out, **QUICK)
    assert res["meta"]["recorded_outside_plan"] == 1
    assert "outside this run's plan" in capsys.readouterr().err
