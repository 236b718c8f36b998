"""Strength 0 is exactly no perturbation, for every wrapper (pixels, state, poses, instruction).

The wrappers are those ``vla_gym.perturbations`` exports (``__all__``), so a new one is covered
once exported; a public wrapper class of the package that is not exported fails the test below.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import gymnasium as gym
import pytest

from tests.perturbations.conftest import assert_same, make_lift, rollout
from vla_gym import perturbations as P

NOT_CONSTRUCTIBLE_WITH_STRENGTH_ONLY: dict[str, str] = {}
"""Exported wrappers that ``cls(env, strength=0.0)`` cannot build, each with the reason (none today)."""

EXPORTED = [getattr(P, name) for name in P.__all__]
ALL = [cls for cls in EXPORTED if cls.__name__ not in NOT_CONSTRUCTIBLE_WITH_STRENGTH_ONLY]


def _wrapper_classes_defined_in_the_package() -> set[type]:
    """Public wrapper classes of the public modules (``_common`` / ``_images`` hold shared bases)."""
    found = set()
    for mod in pkgutil.iter_modules(P.__path__, P.__name__ + "."):
        if mod.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, gym.Wrapper) and obj.__module__ == module.__name__
                    and not name.startswith("_")):
                found.add(obj)
    return found


def test_every_public_wrapper_is_exported_and_every_export_is_a_wrapper():
    assert all(inspect.isclass(c) and issubclass(c, gym.Wrapper) for c in EXPORTED), P.__all__
    defined = _wrapper_classes_defined_in_the_package()
    assert set(EXPORTED) <= defined  # the discovery sees the exported ones
    unexported = sorted(c.__name__ for c in defined - set(EXPORTED))
    assert not unexported, f"add {unexported} to vla_gym.perturbations.__all__ (or make them private)"
    assert set(NOT_CONSTRUCTIBLE_WITH_STRENGTH_ONLY) <= set(P.__all__)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_strength_zero_is_identity(cls, reference):
    env = cls(make_lift(), strength=0.0)
    try:
        got = rollout(env)
    finally:
        env.close()
    for a, b in zip(got, reference):
        assert_same(a, b)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_strength_outside_unit_interval_is_rejected(bad):
    env = make_lift(cameras=())
    try:
        with pytest.raises(ValueError, match="strength must be in"):
            P.CameraPerturbation(env, strength=bad)
        with pytest.raises(ValueError, match="strength must be in"):
            P.GaussianPixelNoise(env, strength=bad)
    finally:
        env.close()


def test_unknown_camera_names_the_valid_ones():
    env = make_lift(cameras=())
    try:
        with pytest.raises(ValueError, match="agentview"):
            P.CameraPerturbation(env, strength=1.0, camera="ceilingcam")
    finally:
        env.close()
