"""A complete policy family outside ``policies/``: a torch model, a skip list and a tiny-checkpoint writer.

``tests/test_family_registry.py`` shows that adding it touches no shared list: its tiny set is
found by discovery, written by the shared CLI and loaded (quantized with its own skip list) by
the runner through ``tests/conf/policy/fake_vla.yaml``.
"""

from vla_gym.policies.fake_family.policy import FakeVLAPolicy

__all__ = ["FakeVLAPolicy"]
