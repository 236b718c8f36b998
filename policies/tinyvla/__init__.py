"""TinyVLA policy adapter (imports torch, transformers and diffusers: load it only when used).

``vla_gym.policies.tinyvla.TinyVLAPolicy.from_pretrained`` is the Hydra target of
``conf/policy/tinyvla.yaml``.
"""

from vla_gym.policies.tinyvla.policy import TinyVLAPolicy

__all__ = ["TinyVLAPolicy"]
