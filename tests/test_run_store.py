"""The run store and the episode plan, in process: lock, de-duplication, fingerprint, validation, retry."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from dataclasses import asdict, replace

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig

from tests.conftest import PYTHON
from vla_gym.config import CONFIG_MODULE, register_configs
from vla_gym.plan import ConfigError, plan_run
from vla_gym.results import EpisodeRecord
from vla_gym.run_store import (
    EPISODES_FILE,
    LOCK_FILE,
    RUN_FILE,
    ConfigMismatch,
    RunDirLocked,
    RunLock,
    RunStore,
    dedupe,
    fingerprint,
    outcome_config,
    record_key,
)

SCENE = {"seeding": "reference", "seed": 0, "index": 0}


def _rec(**kw) -> EpisodeRecord:
    base = EpisodeRecord(suite="libero_spatial", task="t0", task_index=0, init_state_id=0, episode_index=0,
                         seed=7, instruction="do it", success=True, steps=10, sum_reward=1.0, wall_s=1.0,
                         extra={"scene": dict(SCENE)})
    return replace(base, **kw)


def _write(path, records, tail: str = "") -> None:
    path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records) + tail)


def compose_rollout(overrides: list[str]):
    """``conf/rollout.yaml`` with ``${hydra:...}`` resolvable, as under ``@hydra.main``."""
    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("rollout", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


OUTCOME = {"env": {"id": "vla_gym/Lift"}, "policy": {"scale": 1.0}, "init_state_ids": None, "seed": 7}


# ---------------------------------------------------------------------------- lock
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with RunStore(tmp_path, OUTCOME):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunDirLocked, match=rf"in use by another run \(pid {os.getpid()} on host "):
            RunStore(tmp_path, OUTCOME).open()
    assert not (tmp_path / LOCK_FILE).exists()  # released: removed while still held
    with RunStore(tmp_path, OUTCOME):  # and free again
        pass


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    code = ("import sys, time; from vla_gym.run_store import RunLock; "
            f"RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLocked, match=f"pid {proc.pid} "):
            RunLock(tmp_path).acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (tmp_path / LOCK_FILE).exists()  # SIGKILL: the file stays, the flock does not
    with RunLock(tmp_path) as lock:
        assert lock.held and json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_writing_without_the_lock_is_refused(tmp_path):
    store = RunStore(tmp_path, OUTCOME)
    with pytest.raises(Exception, match="not open"):
        store.add(_rec())


# ---------------------------------------------------------------------------- load
def test_duplicate_records_are_dropped_on_load_and_the_file_compacted(tmp_path, capsys):
    a0, a1, b0 = _rec(), _rec(episode_index=1), _rec(task="t1", task_index=1)
    _write(tmp_path / EPISODES_FILE, [a0, a1, replace(a0, wall_s=9.0), b0, replace(a1, wall_s=9.0)])
    (tmp_path / RUN_FILE).write_text(json.dumps({"config_fingerprint": fingerprint(OUTCOME)}))
    with RunStore(tmp_path, OUTCOME) as store:
        assert [r.wall_s for r in store.records] == [1.0, 1.0, 1.0]  # first kept, order kept
        assert [record_key(r) for r in store.records] == [record_key(a0), record_key(a1), record_key(b0)]
    assert "dropped 2 duplicate record(s)" in capsys.readouterr().err
    assert len((tmp_path / EPISODES_FILE).read_text().splitlines()) == 3  # merge/report see 3 too


def test_dedupe_prefers_a_finished_record_and_keeps_the_error_history():
    err = _rec(success=False, error="RuntimeError: boom")
    ok = _rec(wall_s=2.0)
    kept, dropped = dedupe([err, ok, replace(err, error="RuntimeError: again")])
    assert dropped == 2 and kept[0].error is None and kept[0].wall_s == 2.0
    assert kept[0].extra["previous_errors"] == ["RuntimeError: boom", "RuntimeError: again"]


def test_a_corrupt_middle_line_warns_with_file_and_line_and_a_torn_tail_is_cut(tmp_path, capsys):
    path = tmp_path / EPISODES_FILE
    good = [_rec(episode_index=i) for i in range(3)]
    path.write_text(json.dumps(asdict(good[0])) + "\n" + '{"suite": "x"}\n' + json.dumps(asdict(good[1])) + "\n"
                    + json.dumps(asdict(good[2])) + "\n" + '{"suite": "libero_spa')
    (tmp_path / RUN_FILE).write_text(json.dumps({"config_fingerprint": fingerprint(OUTCOME)}))
    with RunStore(tmp_path, OUTCOME) as store:
        assert [r.episode_index for r in store.records] == [0, 1, 2]
        err = capsys.readouterr().err
        assert f"{path}:2: record skipped: missing field(s)" in err
        assert f"{path}:5: incomplete last line ignored" in err
        assert path.read_text().endswith("\n")  # torn tail cut before the next append
        store.add(_rec(episode_index=3))
    with RunStore(tmp_path, OUTCOME) as store:
        assert [r.episode_index for r in store.records] == [0, 1, 2, 3]
        err = capsys.readouterr().err
        assert ":2: record skipped" in err and ":5:" not in err  # no new corrupt line from the torn one


def test_a_rewrite_keeps_unreadable_lines_in_a_backup(tmp_path, capsys):
    path = tmp_path / EPISODES_FILE
    path.write_text(json.dumps(asdict(_rec(success=False, error="E: 1"))) + "\nnot json\n")
    (tmp_path / RUN_FILE).write_text(json.dumps({"config_fingerprint": fingerprint(OUTCOME)}))
    with RunStore(tmp_path, OUTCOME) as store:
        store.add(_rec())  # a retry replaces the errored record: the file is rewritten
    backups = list(tmp_path.glob(f"{EPISODES_FILE}.*.bak"))
    assert len(backups) == 1 and "not json" in backups[0].read_text()
    assert "rewritten without its 1 unreadable line(s)" in capsys.readouterr().err


# ---------------------------------------------------------------------------- fingerprint and keys
def test_fingerprint_covers_init_state_ids_and_not_which_episodes_run():
    base = compose_rollout(["env=libero_spatial"])
    fp = fingerprint(outcome_config(base))
    assert outcome_config(base)["init_state_ids"] is None
    for overrides in (["init_state_ids=[3,4]"], ["scene.seed=7"], ["seed=8"], ["policy.lift_height=0.2"],
                      ["perturbation=libero_pro_with_mug"]):
        assert fingerprint(outcome_config(compose_rollout(["env=libero_spatial", *overrides]))) != fp, overrides
    for overrides in (["episodes_per_task=5"], ["tasks=all"], ["video.enabled=false"], ["retry_errors=false"]):
        assert fingerprint(outcome_config(compose_rollout(["env=libero_spatial", *overrides]))) == fp, overrides


def test_another_config_is_refused_naming_the_keys_that_differ(tmp_path):
    with RunStore(tmp_path, OUTCOME) as store:
        store.start()
    assert json.loads((tmp_path / RUN_FILE).read_text())["outcome_config"] == OUTCOME
    other = {**OUTCOME, "init_state_ids": [3, 4], "policy": {"scale": 0.5}}
    with pytest.raises(ConfigMismatch) as e:
        RunStore(tmp_path, other).open()
    msg = str(e.value)
    assert "different config" in msg and "\n" not in msg
    assert "init_state_ids: null -> [3, 4]" in msg and "policy.scale: 1.0 -> 0.5" in msg
    assert "seed" not in msg.replace("init_state_ids", "")  # only the keys that differ
    assert not (tmp_path / LOCK_FILE).exists()  # refused without keeping the lock
    with RunStore(tmp_path, OUTCOME):  # the right config still resumes
        pass


def test_the_episode_key_includes_init_state_and_scene():
    r = _rec()
    assert record_key(r) != record_key(replace(r, init_state_id=3))
    assert record_key(r) != record_key(replace(r, extra={"scene": {**SCENE, "index": 3}}))
    assert record_key(r) != record_key(replace(r, extra={"scene": {**SCENE, "seed": 7}}))
    assert record_key(r) == record_key(replace(r, wall_s=5.0, success=False))


# ---------------------------------------------------------------------------- retry
def test_errored_episodes_are_retried_by_default_keeping_their_error_history(tmp_path):
    err = _rec(success=False, error="IndexError: first")
    with RunStore(tmp_path, OUTCOME) as store:
        store.start()
        store.add(err)
        assert not store.is_done(record_key(err))
        again = store.add(replace(err, error="IndexError: second"))
        assert again.extra["previous_errors"] == ["IndexError: first"]
        fixed = store.add(_rec(wall_s=3.0))
        assert fixed.error is None and fixed.extra["previous_errors"] == ["IndexError: first", "IndexError: second"]
        assert store.is_done(record_key(fixed))
    lines = (tmp_path / EPISODES_FILE).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["extra"]["scene"] == SCENE
    with RunStore(tmp_path, OUTCOME, retry_errors=False) as store:
        store.add(replace(_rec(episode_index=1), error="E: x"))
        assert store.is_done(record_key(store.records[-1]))  # retry_errors=false: an error counts as done


# ---------------------------------------------------------------------------- validation (plan)
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["episodes_per_task=0"], "episodes_per_task must be >= 1, got 0"),
        (["perturbation=action_noise", "perturbation.strength=1.5"], "perturbation.strength must be in [0, 1]"),
        (["perturbation=action_noise", "perturbation.strength=-0.1"], "perturbation.strength must be in [0, 1]"),
        (["env=libero_spatial", "tasks=[0]", "episodes_per_task=1", "init_state_ids=[50]"],
         "init_state_ids: init state 50 out of range for libero_spatial task 0 (50 initial states: 0..49)"),
        (["env=libero_spatial", "tasks=[0]", "episodes_per_task=51"], "init state 50 out of range"),
        (["env=libero_spatial", "episodes_per_task=3", "init_state_ids=[0,1]"], "init_state_ids has 2 ids for 3"),
        (["tasks=5"], "tasks=5 does not apply to vla_gym/RobosuiteLift-v1: a robosuite env has one task"),
        (["tasks=Stack"], "unknown task 'Stack'"),
        (["init_state_ids=[0,1]"], "init_state_ids applies only to suites with fixed initial states"),
        (["policy=openvla", "policy.checkpoint=/no/such/ckpt"], "policy.checkpoint: no such file or directory"),
        (["policy=openvla"], "policy.checkpoint is required"),
        (["scene.seeding=fixed"], "scene.seeding must be one of"),
        # issue 20: values that used to pass, run every episode into an error, and get fingerprinted
        (["seed=-5"], "seed must be >= 0"),
        (["render_quality=bogus"], "render_quality must be one of"),
        (["video.size=0"], "video.size must be >= 16"),
        (["video.fps=0"], "video.fps must be >= 1"),
        (["image_size=0"], "image_size must be >= 16"),
        (["chunk.replan_steps=0"], "chunk.replan_steps must be >= 1"),
        (["chunk.mode=bogus"], "chunk.mode must be one of"),
        (["chunk.k=-1"], "chunk.k must be >= 0"),
        (["perturbation.strength=0.5"], "perturbation.strength applies only with a perturbation"),
    ],
)
def test_bad_configs_are_refused_in_one_line_before_anything_runs(overrides, message):
    cfg = compose_rollout(["env=robosuite_lift", *overrides])
    with pytest.raises(ConfigError) as e:
        plan_run(cfg)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_failed_start_writes_nothing_into_the_run_dir(tmp_path):
    from vla_gym.rollout import run

    out = tmp_path / "run"
    for overrides in (["episodes_per_task=0"], ["policy=replay", "policy.actions=/no/such.npy"]):
        cfg = compose_rollout(["env=robosuite_lift", f"output_dir={out}", *overrides])
        with pytest.raises(ConfigError):
            run(cfg)
        assert not out.exists() or list(out.iterdir()) == [], overrides  # no run.json, no lock left


def test_robosuite_default_tasks_and_task_zero_select_its_one_task():
    for overrides in ([], ["tasks=0"], ["tasks=Lift"], ["tasks=all"], ["tasks=[0,Lift]"]):
        plan = plan_run(compose_rollout(["env=robosuite_lift", "episodes_per_task=2", *overrides]))
        assert plan.tasks == [0] and plan.suite == "robosuite" and plan.task_names == {0: "Lift"}, overrides
        assert [e.init_state_id for e in plan.episodes] == [None, None] and plan.scene is None


def test_libero_default_plan_lists_init_states_and_scenes():
    plan = plan_run(compose_rollout(["env=libero_spatial", "init_state_ids=[4,9]", "scene.seed=3"]))
    assert plan.tasks == [0, 1] and plan.suite == "libero_spatial"
    assert [(e.task_index, e.episode_index, e.seed, e.init_state_id) for e in plan.episodes] == [
        (0, 0, 7, 4), (0, 1, 8, 9), (1, 0, 7, 4), (1, 1, 8, 9)]
    assert plan.episodes[1].scene == {"seeding": "reference", "seed": 3, "index": 9}


def test_libero_pro_tasks_are_named_and_indexed_in_the_pro_suite():
    from vla_gym.envs.libero import task_names

    pro, base = task_names("libero_spatial_with_mug"), task_names("libero_spatial")
    assert pro[3] != base[3]  # the names differ, so re-deriving them from env.id would be wrong
    plan = plan_run(compose_rollout(["env=libero_spatial", "perturbation=libero_pro_with_mug", "tasks=[3]"]))
    assert plan.suite == "libero_spatial_with_mug" and plan.task_names == {3: pro[3]}
    assert {e.task for e in plan.episodes} == {pro[3]} and all(e.suite == plan.suite for e in plan.episodes)
    by_name = plan_run(compose_rollout(["env=libero_spatial", "perturbation=libero_pro_with_mug",
                                        f"tasks={pro[5]}"]))
    assert by_name.tasks == [5]  # a task name resolves in the PRO suite too
    with pytest.raises(ConfigError, match="unknown task"):
        plan_run(compose_rollout(["env=libero_spatial", "perturbation=libero_pro_with_mug", f"tasks={base[5]}"]))


# ---------------------------------------------------------------------------- summary
def test_the_summary_table_shows_errors_beside_successes():
    from vla_gym.results import aggregate
    from vla_gym.rollout import format_summary

    recs = [_rec(), _rec(episode_index=1, success=False, error="RuntimeError: x"), _rec(episode_index=2)]
    lines = format_summary(aggregate(recs)).splitlines()
    assert lines[0].split()[:3] == ["task", "success", "errors"]
    assert lines[-1].split()[:3] == ["overall", "2/3", "1"]
