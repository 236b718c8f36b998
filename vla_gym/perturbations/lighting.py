"""Lighting perturbation: intensity, direction, colour and shadows (LIBERO-plus "light" axis)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vla_gym.perturbations._common import (
    ModelEditWrapper,
    check_positive,
    mj_model,
    random_unit_vector,
    rotation_matrix,
)


class LightingPerturbation(ModelEditWrapper):
    """Change every light of the scene (and the viewer headlight); physics is untouched.

    At strength ``s``, per light (directions and signs from the episode seed):

    - intensity: diffuse and specular multiplied by ``(1 + s * (max_intensity_factor - 1))``
      or divided by it (random sign; default factor 3, so x3 or /3 at strength 1); the
      headlight's diffuse/ambient get the same factor as the first light;
    - direction: the light is turned by ``s * max_direction_deg`` (default 60 deg) about a
      random axis through the point of its beam nearest the world origin, so it keeps aiming at
      the same spot;
    - colour: the diffuse colour is multiplied per channel by ``1 + s * max_tint * u`` with
      ``u`` a random zero-mean unit vector in RGB (default ``max_tint`` 0.5);
    - shadows: each light's ``castshadow`` flag flips with probability ``s``, unless
      ``shadows`` forces it on or off.

    Args:
        env: A vla_gym env.
        strength: In [0, 1]; 0 leaves the lights as they are.
        max_intensity_factor: Brightness factor at strength 1 (>= 1).
        max_direction_deg: Rotation of the light direction at strength 1, degrees.
        max_tint: Per-channel colour change at strength 1.
        shadows: ``True``/``False`` forces shadows on/off for all lights (applied even at
            strength 0); ``None`` flips them at random as above.

    Examples:
        >>> import gymnasium as gym, vla_gym
        >>> from vla_gym.perturbations import LightingPerturbation
        >>> env = LightingPerturbation(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=1.0)
        >>> obs, info = env.reset(seed=0)
        >>> env.close()
    """

    model_fields = ("light_pos", "light_dir", "light_diffuse", "light_specular", "light_castshadow")
    salt = "lighting"

    def __init__(self, env: gym.Env, strength: float, max_intensity_factor: float = 3.0,
                 max_direction_deg: float = 60.0, max_tint: float = 0.5, shadows: bool | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, strength=strength, max_intensity_factor=max_intensity_factor,
            max_direction_deg=max_direction_deg, max_tint=max_tint, shadows=shadows)
        super().__init__(env, strength)
        self.max_intensity_factor = check_positive("max_intensity_factor", max_intensity_factor)
        if self.max_intensity_factor < 1:
            raise ValueError(f"max_intensity_factor must be >= 1 (it is applied up or down), got {max_intensity_factor}")
        self.max_direction_deg = check_positive("max_direction_deg", max_direction_deg)
        self.max_tint = check_positive("max_tint", max_tint)
        if shadows not in (None, True, False):
            raise ValueError(f"shadows must be true, false or null, got {shadows!r}")
        self.shadows = shadows
        self._headlight: dict[str, np.ndarray] = {}

    def has_override(self) -> bool:
        """Forcing shadows on/off acts even at strength 0."""
        return self.shadows is not None

    def _on_reset(self, base: Any, seed: int) -> None:
        hl = mj_model(base).vis.headlight
        self._headlight = {"diffuse": np.array(hl.diffuse), "ambient": np.array(hl.ambient)}
        super()._on_reset(base, seed)

    def restore_extra(self) -> None:
        """Put the headlight back too (it lives in ``model.vis``, not in a light array)."""
        hl = self._edited_model.vis.headlight
        for key, value in self._headlight.items():
            getattr(hl, key)[...] = value

    def apply(self, model: Any, rng: np.random.Generator) -> None:
        """Rescale, turn, tint and (un)shadow each light by this episode's draw."""
        s = self.strength
        for i in range(model.nlight):
            factor = 1.0 + s * (self.max_intensity_factor - 1.0)
            if rng.random() < 0.5:
                factor = 1.0 / factor
            u = rng.normal(size=3)
            u -= u.mean()
            u /= max(np.linalg.norm(u), 1e-9)
            tint = np.clip(1.0 + s * self.max_tint * u, 0.0, None)
            model.light_diffuse[i] = np.clip(model.light_diffuse[i] * factor * tint, 0.0, None)
            model.light_specular[i] = np.clip(model.light_specular[i] * factor, 0.0, None)
            if i == 0:
                hl = model.vis.headlight
                hl.diffuse[...] = np.asarray(hl.diffuse) * factor
                hl.ambient[...] = np.asarray(hl.ambient) * factor
            d = np.asarray(model.light_dir[i], dtype=np.float64)
            d /= max(np.linalg.norm(d), 1e-9)
            p = np.asarray(model.light_pos[i], dtype=np.float64)
            pivot = p - d * float(p @ d)
            rot = rotation_matrix(random_unit_vector(rng), np.deg2rad(s * self.max_direction_deg))
            model.light_dir[i] = rot @ d
            model.light_pos[i] = pivot + rot @ (p - pivot)
            flip = rng.random() < s
            if self.shadows is not None:
                model.light_castshadow[i] = self.shadows
            elif flip:
                model.light_castshadow[i] = not bool(model.light_castshadow[i])
