"""The runner with a real (tiny) OFT checkpoint, quantized: chunks executed, weights recorded."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import PYTHON


def test_rollout_runs_quantized_oft_and_records_its_weights(tiny_dirs, tmp_path, subprocess_env):
    out = tmp_path / "run"
    args = ["env=libero_spatial", "tasks=[0]", "policy=openvla_oft", f"policy.checkpoint={tiny_dirs['openvla-oft']}",
            "policy.device=cpu", "quantization=int8", "episodes_per_task=1", "max_steps=10", "video.size=64",
            f"hydra.run.dir={out}"]
    proc = subprocess.run([PYTHON, "-m", "vla_gym.rollout", *args], capture_output=True, text=True,
                          env=subprocess_env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record,) = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert record["error"] is None and record["steps"] == 10
    assert record["policy_queries"] == 2  # an (8, 7) chunk executed open loop, then a second query
    meta = json.loads((out / "results.json").read_text())["meta"]
    info = meta["policy_info"]
    assert meta["quantization"] == "int8" and info["quantization"] == "int8"
    assert info["weight_bytes"] > 0 and "int8" in info["dtype"] and info["chunk_size"] == 8
    assert meta["chunk"]["replan_steps"] == 8
