"""OpenVLA-OFT policy adapter (imports torch, timm, transformers and peft: load it only when used).

``vla_gym.policies.openvla_oft.OpenVLAOFTPolicy.from_pretrained`` is the Hydra target of
``conf/policy/openvla_oft.yaml``.
"""

from vla_gym.policies.openvla_oft.policy import OFTModel, OpenVLAOFTPolicy

__all__ = ["OFTModel", "OpenVLAOFTPolicy"]
