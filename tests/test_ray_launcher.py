"""Sharded runs on Ray: ``hydra/launcher=ray`` against a local Ray cluster this test starts itself.

The shards run as Ray tasks on that cluster (the launcher connects to its address rather than
starting a private instance); merged, they hold exactly the episodes of the unsharded run.
Needs the ``ray`` extra (``hydra-ray-launcher``, ``ray``); skipped without it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_parallel import assert_same_episodes
from tests.test_rollout import rollout

pytest.importorskip("ray")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(subprocess_env):
    """A one-node Ray cluster (``ray start --head --block``) on a free port; stopped afterwards."""
    port = free_port()
    # Ray's socket paths must stay under ~107 characters: a short temp dir, not pytest's tmp_path.
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    # Token auth as Ray's default, with a token of this cluster's own (never the user's ~/.ray).
    token = Path(temp_dir) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**subprocess_env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token)}
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            probe = subprocess.run([RAY, "status", f"--address={address}"], env=env, capture_output=True, text=True)
            if probe.returncode == 0:
                break
            if head.poll() is not None or time.monotonic() > deadline:
                out = head.stdout.read() if head.poll() is not None else ""
                pytest.fail(f"local Ray head did not come up: {probe.stderr[-1500:]} {out[-1500:]}")
            time.sleep(1)
        yield address, env
    finally:
        head.terminate()  # --block: terminating the command stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_shards_run_on_a_local_ray_cluster_and_merge_into_the_unsharded_run(tmp_path, ray_cluster):
    import vla_gym
    from vla_gym.merge import main as merge_main

    address, env = ray_cluster
    common = ["env=robosuite_lift", "policy=random", "episodes_per_task=3", "max_steps=5", "video.enabled=false"]
    sweep = tmp_path / "sweep"
    proc = rollout(["-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}",
                    "++hydra.launcher.ray.init.object_store_memory=null", *common,
                    "shard=0/2,1/2", f"hydra.sweep.dir={sweep}"], env, timeout=600)
    log = proc.stdout + proc.stderr
    assert "Ray Launcher is launching 2 jobs" in log, log[-3000:]
    assert address in log and "Started a local Ray instance" not in log, log[-3000:]  # ran on our cluster
    shards = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert len(shards) == 2
    assert sorted(json.loads((d / "results.json").read_text())["meta"]["shard"] for d in shards) == ["0/2", "1/2"]

    full = vla_gym.evaluate("random", env="robosuite_lift", episodes=3, output_dir=tmp_path / "full",
                            max_steps=5, video={"enabled": False})
    assert full["overall"]["episodes"] == 3
    assert merge_main([*map(str, shards), "--out", str(tmp_path / "merged")]) == 0
    assert_same_episodes(tmp_path / "full", tmp_path / "merged", 3)
    assert os.path.isfile(tmp_path / "merged" / "results.json")
