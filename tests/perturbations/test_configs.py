"""LIBERO-PRO configs pick the perturbed suite; sweep; CLI run. (Every conf/perturbation YAML composing,
building through the runner and following perturbation.strength: tests/test_configs_compose.py.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tests.conftest import PYTHON
from vla_gym.config import register_configs

CONF = Path(__file__).resolve().parents[2] / "conf"
NAMES = sorted(p.stem for p in (CONF / "perturbation").glob("*.yaml"))
LIBERO_ONLY = {n for n in NAMES if n.startswith("libero_pro_")}


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_module("vla_gym.conf", version_base="1.3"):
        cfg = compose("rollout", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # as under @hydra.main: ${hydra:...} resolves
    return cfg


@pytest.mark.parametrize("name", sorted(LIBERO_ONLY))
def test_libero_pro_configs_select_the_perturbed_suite(name):
    from vla_gym.envs.libero import SUPPORTED_SUITES

    cfg = _compose([f"perturbation={name}", "env=libero_goal"])
    suite = OmegaConf.to_container(cfg.perturbation.env_kwargs, resolve=True)["suite"]
    assert suite == "libero_goal_" + name.removeprefix("libero_pro_")
    assert suite in SUPPORTED_SUITES
    assert list(cfg.perturbation.wrappers) == []


def test_sweep_experiment_sets_multirun_over_perturbation_and_strength():
    cfg = _compose(["experiment=perturbation_sweep"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = cfg.hydra.sweeper.params
    assert "camera" in params["perturbation"] and params["perturbation.strength"] == "0.0,0.5,1.0"
    assert cfg.env.id == "vla_gym/RobosuiteLift-v1"


def test_rollout_cli_records_perturbation_name_and_strength(tmp_path, subprocess_env):
    out = tmp_path / "run"
    cmd = [PYTHON, "-m", "vla_gym.rollout", "env=robosuite_lift", "policy=scripted", "perturbation=visual",
           "perturbation.strength=0.5", "tasks=[0]", "episodes_per_task=1", "max_steps=4", "video.enabled=false",
           "image_size=32", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["error"] is None
    assert records[0]["perturbation"] == "visual" and records[0]["perturbation_strength"] == 0.5
    results = json.loads((out / "results.json").read_text())
    assert "visual" in json.dumps(results)
