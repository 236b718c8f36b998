"""Test inputs shared by the policy tests: re-exported from :mod:`vla_gym.policies.testing`."""

from vla_gym.policies.testing import BATCH_INSTRUCTIONS, make_frame, observation, observation_batch

__all__ = ["BATCH_INSTRUCTIONS", "make_frame", "observation", "observation_batch"]
