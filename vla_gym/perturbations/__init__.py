"""Perturbations for sim-to-real studies: Gymnasium wrappers with a ``strength`` in [0, 1].

Each wrapper maps ``strength`` to documented physical magnitudes (its docstring), draws its
randomness from the episode's reset seed (same seed -> same perturbation) and is the exact
identity at strength 0. Wrappers compose by stacking; ``conf/perturbation/<name>.yaml`` lists
them for ``python -m vla_gym.rollout perturbation=<name> perturbation.strength=<s>``.

Axes follow LIBERO-plus (camera, robot init, language, light, background, noise, layout) and
add latency, control rate, JPEG, action noise and dynamics. Model edits (camera, lighting,
background, layout, robot init, dynamics, control period) go through the env's reset hook
(:meth:`vla_gym.envs.base.RobosuiteBackedEnv.add_reset_hook`): they are applied after every
sim reset and before the settle steps, since LIBERO rebuilds its model on each reset.
"""

from __future__ import annotations

from vla_gym.perturbations.action_noise import ActionNoise
from vla_gym.perturbations.background import BackgroundPerturbation
from vla_gym.perturbations.camera import CameraPerturbation
from vla_gym.perturbations.control_rate import ControlRate
from vla_gym.perturbations.dynamics import DynamicsPerturbation
from vla_gym.perturbations.jpeg import JpegCompression
from vla_gym.perturbations.language import LanguagePerturbation
from vla_gym.perturbations.latency import ActionDelay, ObservationDelay
from vla_gym.perturbations.layout import LayoutPerturbation
from vla_gym.perturbations.lighting import LightingPerturbation
from vla_gym.perturbations.robot_init import RobotInitPerturbation
from vla_gym.perturbations.sensor_noise import GaussianPixelNoise, MotionBlur

__all__ = [
    "ActionDelay",
    "ActionNoise",
    "BackgroundPerturbation",
    "CameraPerturbation",
    "ControlRate",
    "DynamicsPerturbation",
    "GaussianPixelNoise",
    "JpegCompression",
    "LanguagePerturbation",
    "LayoutPerturbation",
    "LightingPerturbation",
    "MotionBlur",
    "ObservationDelay",
    "RobotInitPerturbation",
]
