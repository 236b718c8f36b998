"""The "write a policy" how-to's example runs as printed, and the runner executes it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vla_gym.chunking import ChunkedActor
from vla_gym.policy import Policy

README = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "write-a-policy.md"


def _example_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    matches = [b for b in blocks if "class GoRight(Policy)" in b]
    assert len(matches) == 1, "docs/how-to/write-a-policy.md must hold exactly one GoRight example"
    return matches[0]


def test_readme_policy_example_runs_and_is_batched():
    namespace: dict = {}
    exec(compile(_example_source(), str(README), "exec"), namespace)  # noqa: S102 - our own docs
    policy = namespace["GoRight"]()
    assert isinstance(policy, Policy)
    actor = ChunkedActor(policy, num_envs=2, mode=policy.execution.mode, replan_steps=policy.execution.replan_steps)
    obs = {"images": {}, "state": np.zeros(8, np.float32)}
    calls = 0
    for _ in range(4):
        out = actor.step({0: obs, 1: obs})
        calls += actor.last_call is not None
        assert out[0][1] == 0.5 and out[1][6] == -1.0
    assert calls == 2  # replan_steps=2 of a 4-step chunk: a query every other step
