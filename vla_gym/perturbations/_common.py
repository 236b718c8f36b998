"""Shared pieces of the perturbation wrappers: strength checks, per-episode RNGs, model edits.

Every wrapper draws its randomness from ``np.random.default_rng([episode_seed, salt])``: the
episode's simulator seed (so the same reset seed gives the same perturbation) mixed with a
per-family salt (so two families on one env do not draw correlated numbers).
"""

from __future__ import annotations

import zlib
from typing import Any

import gymnasium as gym
import numpy as np

ROBOT_PREFIXES = ("robot", "gripper", "mount")
"""Name prefixes of the robot's bodies in robosuite/LIBERO scenes (never perturbed as objects)."""


def check_strength(strength: float) -> float:
    """Return ``strength`` as a float in [0, 1] or raise ``ValueError`` saying how to fix it."""
    try:
        s = float(strength)
    except (TypeError, ValueError) as e:
        raise TypeError(f"strength must be a number in [0, 1], got {strength!r}") from e
    if not 0.0 <= s <= 1.0 or not np.isfinite(s):
        raise ValueError(
            f"strength must be in [0, 1] (0 = no perturbation, 1 = the documented maximum), got {strength!r}; "
            "to go beyond the maximum, raise the wrapper's max_* magnitude instead"
        )
    return s


def check_positive(name: str, value: float, *, allow_zero: bool = True) -> float:
    """Validate a magnitude parameter (``max_*``) and return it as a float."""
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def episode_rng(seed: int | None, salt: str) -> np.random.Generator:
    """Generator for one episode of one perturbation family: same seed -> same draws."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([int(seed) % 2**32, zlib.crc32(salt.encode())])


def episode_seed(env: gym.Env, reset_seed: int | None) -> int | None:
    """The simulator seed of the episode just reset (vla_gym envs), else the reset seed."""
    seed = getattr(env.unwrapped, "episode_seed", None)
    return seed if seed is not None else reset_seed


def require_sim_env(env: gym.Env, wrapper: str) -> Any:
    """The unwrapped vla_gym env, or a ``TypeError`` explaining what ``wrapper`` needs."""
    base = env.unwrapped
    if not hasattr(base, "add_reset_hook") or not hasattr(base, "sim_env"):
        raise TypeError(
            f"{wrapper} edits the MuJoCo model and needs a vla_gym env (RobosuiteBackedEnv, e.g. "
            f"gym.make('vla_gym/Lift')), got {type(base).__name__}"
        )
    return base


def mj_model(base: Any) -> Any:
    """The raw ``mujoco.MjModel`` of a vla_gym env (robosuite wraps it)."""
    return base.sim_env.sim.model._model


def mj_data(base: Any) -> Any:
    """The raw ``mujoco.MjData`` of a vla_gym env."""
    return base.sim_env.sim.data._data


def random_unit_vector(rng: np.random.Generator, dim: int = 3) -> np.ndarray:
    """A direction drawn uniformly on the unit sphere."""
    v = rng.normal(size=dim)
    return v / np.linalg.norm(v)


def axis_angle_quat(axis: np.ndarray, angle: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation by ``angle`` radians about unit ``axis``."""
    return np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * np.asarray(axis, dtype=np.float64)])


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about unit ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def movable_bodies(model: Any) -> list[int]:
    """Ids of bodies with a free joint that are not part of the robot (the scene's objects)."""
    import mujoco

    out = []
    for j in range(model.njnt):
        if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
            b = int(model.jnt_bodyid[j])
            if not model.body(b).name.startswith(ROBOT_PREFIXES):
                out.append(b)
    return out


class ModelEditWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Base of wrappers that edit the MuJoCo model (or initial state) on every reset.

    Subclasses list the ``MjModel`` arrays they touch in :attr:`model_fields` and implement
    :meth:`apply`. On each reset the wrapper first writes back the values it saved before its
    last edit (robosuite tasks soft-reset and keep the model; edits must not accumulate), then
    the env resets, and from the env's reset hook (after the sim reset, before the settle
    steps) the wrapper saves the fresh nominal values and applies this episode's edit. Restores
    run outermost-first, the reverse of the edits, so wrappers touching the same array stack.
    """

    model_fields: tuple[str, ...] = ()
    salt: str = "model_edit"

    def __init__(self, env: gym.Env, strength: float) -> None:
        gym.Wrapper.__init__(self, env)
        self.strength = check_strength(strength)
        self._base = require_sim_env(env, type(self).__name__)
        self._edited_model: Any = None
        self._saved: dict[str, np.ndarray] = {}
        self._base.add_reset_hook(self._on_reset)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Undo last episode's edit, then reset (the hook applies this episode's edit)."""
        self.restore()
        return self.env.reset(seed=seed, options=options)

    def restore(self) -> None:
        """Write back the nominal values if the model that was edited is still in use."""
        if self._edited_model is not None and self._base.sim_env is not None:
            if mj_model(self._base) is self._edited_model:
                for field, value in self._saved.items():
                    getattr(self._edited_model, field)[...] = value
                self.restore_extra()
        self._edited_model = None

    def restore_extra(self) -> None:
        """Restore state kept outside ``model_fields`` (override when :meth:`apply` touches some)."""

    def _on_reset(self, base: Any, seed: int) -> None:
        model = mj_model(base)
        self._saved = {f: np.array(getattr(model, f), copy=True) for f in self.model_fields}
        self._edited_model = model
        if self.strength > 0 or self.has_override():
            self.apply(model, episode_rng(seed, self.salt))

    def has_override(self) -> bool:
        """True when an explicit magnitude override makes the wrapper act even at strength 0."""
        return False

    def apply(self, model: Any, rng: np.random.Generator) -> None:
        """Edit ``model`` (and/or the sim state) for this episode."""
        raise NotImplementedError
