"""TinyVLA policy adapter.

``vla_gym.policies.tinyvla.TinyVLAPolicy.from_pretrained`` is the Hydra target of
``conf/policy/tinyvla.yaml``. ``TinyVLAPolicy`` is imported lazily (it needs torch, transformers
and diffusers), so ``python -m vla_gym.policies.tinyvla.convert_stats`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TinyVLAPolicy"]


def __getattr__(name: str) -> Any:
    if name == "TinyVLAPolicy":
        from vla_gym.policies.tinyvla.policy import TinyVLAPolicy

        return TinyVLAPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
