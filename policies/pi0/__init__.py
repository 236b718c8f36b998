"""pi0 / pi0.5 policy adapters (openpi-PyTorch and LeRobot checkpoints; imports torch: load it only when used).

``vla_gym.policies.pi0.Pi0Policy.from_pretrained`` is the Hydra target of ``conf/policy/pi0.yaml``
and ``conf/policy/pi05.yaml``. The network is :mod:`.modeling`; around it: :mod:`.config` (layout,
variant, recipe), :mod:`.loader` (key rules), :mod:`.stats`, :mod:`.prompts`, :mod:`.tokenizer`,
:mod:`.processing` (LIBERO images/state/actions) and :mod:`.make_tiny` (test checkpoints).
"""

from vla_gym.policies.pi0.policy import Pi0Policy

__all__ = ["Pi0Policy"]
