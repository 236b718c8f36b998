"""The ``vla-gym`` console script, run for real in subprocesses (help, config printing, listings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(sys.executable).parent / "vla-gym"


def _run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), f"{SCRIPT} missing: `pip install -e .` installs the console script"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_overview_lists_every_command() -> None:
    from vla_gym.cli import SUBCOMMANDS

    r = _run("--help")
    assert r.returncode == 0, r.stderr
    for name in ("rollout", "serve", "report", "merge", "checkpoints", "envs", "policies"):
        assert name in SUBCOMMANDS and f"  {name} " in r.stdout
    bad = _run("rollot")
    assert bad.returncode == 2 and "did you mean 'rollout'" in bad.stderr


@pytest.mark.parametrize("command", ["rollout", "serve", "report", "merge", "checkpoints", "envs", "policies"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    r = _run(command, "--help")
    assert r.returncode == 0, r.stderr
    assert f"vla-gym {command}" in r.stdout and "xample" in r.stdout
    if command in ("rollout", "serve"):  # common keys, one line each, with the real group options
        from vla_gym.cli import _group_options

        assert "policy=NAME" in r.stdout and ", ".join(_group_options("policy")) in r.stdout


def test_rollout_overrides_pass_through_like_python_m() -> None:
    args = ["env=robosuite_lift", "policy=random", "episodes_per_task=3", "video.enabled=false", "--cfg", "job"]
    ours = _run("rollout", *args)
    assert ours.returncode == 0, ours.stderr
    cfg = yaml.safe_load(ours.stdout)
    assert cfg["env"]["id"] == "vla_gym/RobosuiteLift-v1" and cfg["episodes_per_task"] == 3 and cfg["video"]["enabled"] is False
    theirs = subprocess.run([sys.executable, "-m", "vla_gym.rollout", *args], capture_output=True, text=True,
                            timeout=120)
    assert theirs.returncode == 0 and yaml.safe_load(theirs.stdout) == cfg


def test_bad_override_is_one_line_and_nonzero() -> None:
    r = _run("rollout", "episodes=3")
    assert r.returncode != 0
    assert "unknown config key 'episodes'; did you mean 'episodes_per_task'?" in r.stderr
    assert "Traceback" not in r.stderr


def test_envs_lists_suites_and_tasks_from_libero() -> None:
    from vla_gym.envs.libero import load_suite

    r = _run("envs")
    assert r.returncode == 0, r.stderr
    assert "robosuite_lift" in r.stdout and "vla_gym/RobosuiteLift-v1" in r.stdout and "libero_spatial_lan" in r.stdout
    r = _run("envs", "libero_object", "robosuite_stack")
    assert r.returncode == 0, r.stderr
    suite = load_suite("libero_object")
    for i in range(suite.n_tasks):
        assert f"instruction: {suite.get_task(i).language}" in r.stdout
    assert r.stdout.count("init states: 50") == suite.n_tasks
    assert "stack the red cube on top of the green cube" in r.stdout
    assert _run("envs", "libero_spatail").returncode == 2


def test_policies_lists_declared_inputs_and_execution() -> None:
    r = _run("policies", "scripted", "openvla_oft")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:] if line.strip()}
    from vla_gym.policies.openvla_oft import OpenVLAOFTPolicy
    from vla_gym.policies.scripted import ScriptedPickPlacePolicy

    oft = OpenVLAOFTPolicy.execution
    assert f"{oft.mode}, {oft.replan_steps}" in rows["openvla_oft"] and "agentview+wrist @256" in rows["openvla_oft"]
    assert "privileged" in rows["scripted"] and ScriptedPickPlacePolicy.execution.mode in rows["scripted"]
    assert _run("policies", "openvlaa").returncode == 2


def test_shell_completion_goes_through_hydra() -> None:
    script = _run("-sc", "install=bash")
    assert script.returncode == 0 and "complete -o nospace -o default -F hydra_bash_completion vla-gym" in script.stdout
    line = "vla-gym rollout env=libero_s"
    q = _run("-sc", "query=bash", env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert q.returncode == 0 and q.stdout.split() == ["env=libero_spatial"]
    q = _run("-sc", "query=bash", env={"COMP_LINE": "vla-gym pol", "COMP_POINT": "11"})
    assert q.stdout.split() == ["policies"]


def test_rollout_imports_the_users_own_modules_from_the_working_directory(tmp_path: Path) -> None:
    """As `python -m vla_gym.rollout` does: an env suite of the user's project (here the test tree's toy suite)."""
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([str(SCRIPT), "rollout", "hydra.searchpath=[file://tests/conf]", "env=toy", "policy=random",
                        "policy.cameras=[agentview]", "policy.image_size=32", "episodes_per_task=1", "video.enabled=false",
                        "tasks=[0]", f"output_dir={tmp_path / 'run'}"],
                       capture_output=True, text=True, timeout=300, cwd=root, env={**os.environ})
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "run" / "results.json").is_file()
