"""vla_gym environments, registered with Gymnasium under the ``vla_gym/`` namespace.

``import vla_gym`` registers every id (it imports no simulator yet):

- LIBERO suites ``vla_gym/libero_spatial``, ``libero_object``, ``libero_goal``, ``libero_10``,
  ``libero_90`` and the LIBERO-PRO suites that ship files (``libero_spatial_lan``, ``_object``,
  ``_swap``, ``_task``, ``_with_mug``, ``_with_yellow_book``, ``_with_milk`` of spatial, object,
  goal and 10); choose the task with ``task=<index or name>``.
- robosuite tasks ``vla_gym/Lift``, ``Stack``, ``PickPlaceCan``, ``NutAssemblySquare``, ``Door``.

>>> import gymnasium as gym, vla_gym
>>> env = gym.make("vla_gym/libero_spatial", task=0, cameras=("agentview", "wrist"), image_size=224)  # doctest: +SKIP
"""

from __future__ import annotations

import gymnasium as gym

from vla_gym.envs.contract import CAMERA_ALIASES, upright
from vla_gym.envs.libero import SUPPORTED_SUITES, max_episode_steps
from vla_gym.envs.robosuite_tasks import TASKS as ROBOSUITE_TASKS

NAMESPACE = "vla_gym"


def env_id(name: str) -> str:
    """The Gymnasium id of a LIBERO suite or robosuite task name."""
    return f"{NAMESPACE}/{name}"


def register_envs() -> None:
    """Register all vla_gym ids (idempotent)."""
    for suite in SUPPORTED_SUITES:
        if env_id(suite) not in gym.registry:
            gym.register(
                id=env_id(suite),
                entry_point="vla_gym.envs.libero:LiberoEnv",
                max_episode_steps=max_episode_steps(suite),
                kwargs={"suite": suite},
                disable_env_checker=True,  # tests run gymnasium's full check_env instead
            )
    for name, task in ROBOSUITE_TASKS.items():
        if env_id(name) not in gym.registry:
            gym.register(
                id=env_id(name),
                entry_point="vla_gym.envs.robosuite_tasks:RobosuiteEnv",
                max_episode_steps=task.max_episode_steps,
                kwargs={"task": name},
                disable_env_checker=True,
            )


register_envs()

__all__ = ["CAMERA_ALIASES", "ROBOSUITE_TASKS", "SUPPORTED_SUITES", "env_id", "register_envs", "upright"]
