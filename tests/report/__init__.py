"""Tests of ``vla_gym.report``."""
