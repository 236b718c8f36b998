"""vla_gym environments, registered with Gymnasium under the ``vla_gym/`` namespace.

``import vla_gym`` registers every id (it imports no simulator yet):

- LIBERO suites ``vla_gym/LiberoSpatial-v1``, ``LiberoObject-v1``, ``LiberoGoal-v1``,
  ``Libero10-v1``, ``Libero90-v1`` and the LIBERO-PRO suites that ship files
  (``LiberoSpatialLan-v1``, ``...Object``, ``...Swap``, ``...Task``, ``...WithMug``,
  ``...WithYellowBook``, ``...WithMilk`` of spatial, object, goal and 10); choose the task with
  ``task=<index or name>``.
- robosuite tasks ``vla_gym/RobosuiteLift-v1``, ``RobosuiteStack-v1``, ``RobosuitePickPlaceCan-v1``,
  ``RobosuiteNutAssemblySquare-v1``, ``RobosuiteDoor-v1``.

The ids before versioning (``vla_gym/libero_spatial``, ``vla_gym/Lift``, ...) remain registered
as deprecated aliases of the same envs: they work and warn once (:data:`DEPRECATED_IDS`).

>>> import gymnasium as gym, vla_gym
>>> env = gym.make("vla_gym/LiberoSpatial-v1", task=0, cameras=("agentview", "wrist"), image_size=224)  # doctest: +SKIP
"""

from __future__ import annotations

import gymnasium as gym

from vla_gym.envs.contract import CAMERA_ALIASES, upright
from vla_gym.envs.libero import SUPPORTED_SUITES, max_episode_steps
from vla_gym.envs.robosuite_tasks import TASKS as ROBOSUITE_TASKS
from vla_gym.envs.suite import ALIAS, ALIAS_OF

NAMESPACE = "vla_gym"
VERSION = 1
"""Version of every id registered here; bumped for a family when its envs change behaviour."""


def versioned_name(name: str) -> str:
    """``libero_spatial`` -> ``LiberoSpatial``, robosuite ``Lift`` -> ``RobosuiteLift`` (the family prefixed)."""
    if name in ROBOSUITE_TASKS:
        return "Robosuite" + name
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def env_id(name: str) -> str:
    """The Gymnasium id of a LIBERO suite or robosuite task name: ``vla_gym/LiberoSpatial-v1``."""
    return f"{NAMESPACE}/{versioned_name(name)}-v{VERSION}"


def legacy_id(name: str) -> str:
    """The id the same env had before ids were versioned (``vla_gym/libero_spatial``), now a deprecated alias."""
    return f"{NAMESPACE}/{name}"


DEPRECATED_IDS: dict[str, str] = {}
"""Deprecated id -> current id. The old ids stay registered; building or planning with one warns once."""


def _register(id: str, entry_point: str, max_steps: int, kwargs: dict) -> None:
    if id not in gym.registry:
        gym.register(id=id, entry_point=entry_point, max_episode_steps=max_steps, kwargs=kwargs,
                     disable_env_checker=True)  # tests run gymnasium's full check_env instead


def register_envs() -> None:
    """Register all vla_gym ids and their deprecated unversioned aliases (idempotent)."""
    families = [(suite, "vla_gym.envs.libero:LiberoEnv", max_episode_steps(suite), {"suite": suite})
                for suite in SUPPORTED_SUITES]
    families += [(name, "vla_gym.envs.robosuite_tasks:RobosuiteEnv", task.max_episode_steps, {"task": name})
                 for name, task in ROBOSUITE_TASKS.items()]
    for name, entry_point, max_steps, kwargs in families:
        new, old = env_id(name), legacy_id(name)
        _register(new, entry_point, max_steps, kwargs)
        _register(old, "vla_gym.envs.suite:make_alias", max_steps, {ALIAS_OF: new, ALIAS: old})
        DEPRECATED_IDS[old] = new


register_envs()

__all__ = ["CAMERA_ALIASES", "DEPRECATED_IDS", "ROBOSUITE_TASKS", "SUPPORTED_SUITES", "env_id", "legacy_id",
           "register_envs", "upright", "versioned_name"]
