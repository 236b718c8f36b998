"""A two-layer torch "VLA" whose ``head`` must stay in full precision (its declared skip list)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from vla_gym.policy import ActionChunk, Observation, Policy, PolicyInfo, PolicyInputs, resolve_env_ids
from vla_gym.quantization import apply_quantization

WEIGHTS = "model.safetensors"


def build_model() -> torch.nn.Module:
    """8-D state -> 7-D action; ``body`` is quantized, ``head`` is not."""
    model = torch.nn.Module()
    model.body = torch.nn.Linear(8, 32)
    model.head = torch.nn.Linear(32, 7)
    return model


class FakeVLAPolicy(Policy):
    """Reads the state, answers one action per call."""

    inputs = PolicyInputs(uses_state=True)
    loads_weights = True
    quantization_skip = ("head",)

    def __init__(self, model: torch.nn.Module, quantization: str) -> None:
        self.model, self.quantization = model, quantization

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, device: str = "cpu", quantization: Any = None) -> FakeVLAPolicy:
        model = build_model()
        model.load_state_dict(load_file(str(Path(checkpoint) / WEIGHTS)))
        name = apply_quantization(model, quantization, device, skip_modules=cls.quantization_skip)
        return cls(model, name)

    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None) -> ActionChunk:
        ids = resolve_env_ids(observations, env_ids)
        state = torch.as_tensor(np.stack([o["state"] for o in observations]), dtype=torch.float32)
        with torch.no_grad():
            out = torch.tanh(self.model.head(torch.relu(self.model.body(state.to(self.model.head.weight.dtype)))))
        return ActionChunk(out.float().numpy().reshape(len(ids), 1, 7))

    def info(self) -> PolicyInfo:
        return PolicyInfo(name="fake_vla", quantization=self.quantization)
