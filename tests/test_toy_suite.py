"""A new env suite is one module and one YAML, with zero edits in ``vla_gym/``: run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_rollout import rollout

CONF = Path(__file__).resolve().parent / "conf"


def test_a_toy_suite_from_the_test_tree_runs_through_the_cli(tmp_path, subprocess_env):
    out = tmp_path / "run"
    proc = rollout([f"hydra.searchpath=[file://{CONF}]", "env=toy", "policy=random", "policy.cameras=[agentview]",
                    "policy.image_size=32", "policy.scale=1.0", "episodes_per_task=2", "video.size=32",
                    f"hydra.run.dir={out}"], subprocess_env, timeout=180)
    assert "overall" in proc.stdout
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    # tasks: default = what the suite declared (both tasks), names and instructions from the env itself
    assert [(r["suite"], r["task"], r["task_index"]) for r in records] == [
        ("toy", "reach_3", 0), ("toy", "reach_3", 0), ("toy", "reach_5", 1), ("toy", "reach_5", 1)]
    assert {r["instruction"] for r in records} == {"move right three times", "move right five times"}
    assert all(r["error"] is None and r["init_state_id"] is None and 1 <= r["steps"] <= 8 for r in records)
    assert all((out / r["video"]).exists() for r in records)
    assert json.loads((out / "results.json").read_text())["meta"]["suite"] == "toy"


def test_the_planner_reads_the_toy_suites_declaration():
    from omegaconf import OmegaConf

    from tests.test_run_store import compose_rollout
    from vla_gym.plan import plan_run

    cfg = compose_rollout(["env=robosuite_lift"])
    toy = OmegaConf.load(CONF / "env" / "toy.yaml")  # the test tree's YAML, not a vla_gym one
    cfg.env.id, cfg.env.kind = toy.id, toy.kind
    plan = plan_run(cfg)
    assert plan.suite == "toy" and plan.tasks == [0, 1] and plan.scene is None
    assert plan.task_names == {0: "reach_3", 1: "reach_5"}


def test_the_toy_suite_gives_the_same_records_and_videos_in_process_and_in_workers(tmp_path, subprocess_env):
    """The one loop: N = 1 (env in this process) and N = 2 (env worker processes) write the same episodes."""
    import imageio.v2 as imageio
    import numpy as np

    runs = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        rollout([f"hydra.searchpath=[file://{CONF}]", "env=toy", "policy=random", "policy.cameras=[agentview]",
                 "policy.image_size=32", "episodes_per_task=2", "video.size=32", "trajectory.enabled=true",
                 f"num_envs={n}", f"hydra.run.dir={out}"], subprocess_env, timeout=240)
        volatile = {"wall_s", "latency_ms_mean", "latency_ms_p95"}
        recs = [{k: v for k, v in json.loads(line).items() if k not in volatile}
                for line in (out / "episodes.jsonl").read_text().splitlines()]
        for r in recs:
            r["extra"].pop("policy_timing_ms", None)
        runs[n] = (out, sorted(recs, key=lambda r: (r["task_index"], r["episode_index"])))
    (a, ra), (b, rb) = runs[1], runs[2]
    assert ra == rb and len(ra) == 4
    for r in ra:
        assert (imageio.mimread(a / r["video"])[-1] == imageio.mimread(b / r["video"])[-1]).all()
        ta, tb = (np.load(d / r["extra"]["trajectory"]) for d in (a, b))
        assert sorted(ta.files) == sorted(tb.files) and all(np.array_equal(ta[k], tb[k]) for k in ta.files)
