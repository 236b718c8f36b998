"""OpenVLA policy adapter (imports torch, timm and transformers: load it only when used).

``vla_gym.policies.openvla.OpenVLAPolicy.from_pretrained`` is the Hydra target of
``conf/policy/openvla.yaml``.
"""

from vla_gym.policies.openvla.errors import CheckpointError, UnnormKeyError
from vla_gym.policies.openvla.policy import OpenVLAPolicy, load_openvla_model

__all__ = ["CheckpointError", "OpenVLAPolicy", "UnnormKeyError", "load_openvla_model"]
