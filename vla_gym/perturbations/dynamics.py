"""Dynamics perturbation: friction and object-mass scaling (not in LIBERO-plus)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vla_gym.envs.base import body_subtree
from vla_gym.perturbations._common import ModelEditWrapper, movable_bodies


class DynamicsPerturbation(ModelEditWrapper):
    """Scale contact friction and object masses; pixels at reset are unchanged.

    At strength ``s`` (signs drawn from the episode seed):

    - friction: every geom's friction (sliding, torsional, rolling) is multiplied by
      ``max_friction_factor ** (+/- s)`` (default 2: x2 or x0.5 at strength 1). All geoms are
      scaled because MuJoCo combines a contact's two frictions with ``max``: scaling only the
      object would not lower the friction against the gripper pads.
    - mass: each movable object's bodies get mass and inertia multiplied by
      ``max_mass_factor ** (+/- s)`` (default 2), each object with its own sign.

    ``friction_scale`` / ``mass_scale`` set exact factors instead (applied even at strength 0).

    Args:
        env: A vla_gym env.
        strength: In [0, 1]; 0 keeps the nominal dynamics.
        max_friction_factor: Friction factor at strength 1 (>= 1, applied up or down).
        max_mass_factor: Mass factor at strength 1 (>= 1, applied up or down).
        friction_scale: Fixed friction factor (overrides the strength draw).
        mass_scale: Fixed mass factor for all objects (overrides the strength draw).

    Examples:
        >>> import gymnasium as gym, vla_gym
        >>> from vla_gym.perturbations import DynamicsPerturbation
        >>> env = DynamicsPerturbation(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=1.0)
        >>> obs, info = env.reset(seed=0)
        >>> env.close()
    """

    model_fields = ("geom_friction", "body_mass", "body_inertia")
    salt = "dynamics"

    def __init__(self, env: gym.Env, strength: float, max_friction_factor: float = 2.0,
                 max_mass_factor: float = 2.0, friction_scale: float | None = None,
                 mass_scale: float | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, strength=strength, max_friction_factor=max_friction_factor, max_mass_factor=max_mass_factor,
            friction_scale=friction_scale, mass_scale=mass_scale)
        super().__init__(env, strength)
        for name, v in (("max_friction_factor", max_friction_factor), ("max_mass_factor", max_mass_factor)):
            if not float(v) >= 1.0:
                raise ValueError(f"{name} must be >= 1 (it is applied up or down), got {v!r}")
        for name, v in (("friction_scale", friction_scale), ("mass_scale", mass_scale)):
            if v is not None and not float(v) > 0:
                raise ValueError(f"{name} must be > 0 or null, got {v!r}")
        self.max_friction_factor = float(max_friction_factor)
        self.max_mass_factor = float(max_mass_factor)
        self.friction_scale = friction_scale
        self.mass_scale = mass_scale

    def has_override(self) -> bool:
        """Explicit factors act even at strength 0."""
        return self.friction_scale is not None or self.mass_scale is not None

    def factors(self, rng: np.random.Generator, n_objects: int) -> tuple[float, list[float]]:
        """This episode's friction factor and per-object mass factors."""
        s = self.strength

        def draw(max_factor: float) -> float:
            return float(max_factor ** (s if rng.random() < 0.5 else -s))

        friction = draw(self.max_friction_factor)
        masses = [draw(self.max_mass_factor) for _ in range(n_objects)]
        if self.friction_scale is not None:
            friction = float(self.friction_scale)
        if self.mass_scale is not None:
            masses = [float(self.mass_scale)] * n_objects
        return friction, masses

    def apply(self, model: Any, rng: np.random.Generator) -> None:
        """Scale friction of all geoms and mass/inertia of each movable object."""
        objects = movable_bodies(model)
        friction, masses = self.factors(rng, len(objects))
        model.geom_friction[:] *= friction
        for root, factor in zip(objects, masses):
            for b in body_subtree(model, root):
                model.body_mass[b] *= factor
                model.body_inertia[b] *= factor
