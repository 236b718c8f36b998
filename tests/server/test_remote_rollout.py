"""policy=remote runs a real robosuite Lift rollout against a vla_gym server in another process,
and its actions are bit-identical to the in-process run of the same policy."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig

from tests.server.helpers import ROOT, server_process
from vla_gym.chunking import ChunkedActor
from vla_gym.config import CONFIG_MODULE, register_configs
from vla_gym.rollout import build_policy, chunk_execution, make_env, run_episode

POLICY = ["policy.chunk_size=4", "policy.cameras=[agentview,wrist]", "policy.image_size=64"]
RUN = ["env=robosuite_lift", "max_steps=5", "episodes_per_task=1", "video.enabled=false"]


class ActionRecorder(gym.Wrapper):
    def __init__(self, env) -> None:
        super().__init__(env)
        self.actions: list[np.ndarray] = []

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        return self.env.step(action)


def episode(overrides: list[str]) -> tuple[dict, list[np.ndarray], dict]:
    """One episode exactly as ``vla_gym.rollout.run`` does it, recording the executed actions."""
    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("rollout", overrides=[*RUN, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    policy = build_policy(cfg.policy, cfg.quantization)
    try:
        env = ActionRecorder(make_env(cfg, 0, policy, record_video=False))
        actor = ChunkedActor(policy, num_envs=1, **chunk_execution(cfg, policy))
        result, _ = run_episode(env, actor, seed=int(cfg.seed), init_state_id=None, record_video=False,
                                video_size=64, cameras=tuple(policy.inputs.cameras))
        env.close()
        return result, env.actions, actor.last_call or {}
    finally:
        policy.close()


def test_remote_rollout_equals_in_process(tmp_path):
    with server_process(tmp_path, ["policy=random", *POLICY]) as (_, port):
        out = tmp_path / "cli"
        cli = subprocess.run([sys.executable, "-m", "vla_gym.rollout", *RUN, "policy=remote", f"policy.port={port}",
                              f"hydra.run.dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr[-3000:]
        remote, remote_actions, _ = episode(["policy=remote", f"policy.port={port}"])
    local, local_actions, _ = episode(["policy=random", *POLICY])

    assert len(remote_actions) == len(local_actions) == 5
    for a, b in zip(remote_actions, local_actions):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()  # bit-identical
    assert remote["policy_queries"] == local["policy_queries"] == 2  # chunks of 4, open loop, 5 steps
    assert {"network", "server", "model"} <= set(remote["policy_timing_ms"])

    record = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert record["error"] is None and record["steps"] == 5 and record["policy_queries"] == 2
    assert record["sum_reward"] == local["sum_reward"] and record["success"] == local["success"]
    assert {"network", "server"} <= set(record["extra"]["policy_timing_ms"])
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["policy_info"]["name"] == "remote:random"
    assert results["meta"]["policy_info"]["extra"]["server"]["chunk_size"] == 4
