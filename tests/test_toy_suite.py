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
