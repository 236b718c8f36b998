"""What the planner and the runner know about an env family: declared by the family itself.

Every env class registered under a Gymnasium id declares a classmethod ``describe(**kwargs) ->
EnvSuite`` (``kwargs``: the id's registered kwargs, overridden by the config's). The planner
(:mod:`vla_gym.plan`) and the env builder (:mod:`vla_gym.build`) read tasks, initial states,
default tasks, step limits and scene seeding from that object and never test an env's kind, so a
new suite is one module here (or anywhere importable) plus one YAML in ``conf/env/``.

The env object itself must follow :mod:`vla_gym.envs.contract`: ``obs["images"][camera]``,
``obs["instruction"]``, ``info["is_success"]``, ``unwrapped.suite_name`` / ``task_name`` /
``instruction``, ``render()`` when built with ``render_mode="rgb_array"``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


DEFAULT_SCENE_SEED = 0
"""S of ``env.seed(S)`` when neither ``scene.seed``, the policy nor the suite says otherwise: what
OpenVLA's and OpenVLA-OFT's LIBERO evals seed each task with (openpi declares 7)."""
SCENE_SEEDINGS = ("reference", "per_episode")
"""``scene.seeding`` values a scene-seeding suite takes: ``reference`` = init state k in the reference
evals' k-th scene; ``per_episode`` = independent scenes from each episode's seed."""


ALIAS_OF, ALIAS = "_alias_of", "_alias"
"""Registered kwargs of a deprecated id: the current id it stands for, and its own name."""
_WARNED: set[str] = set()


def warn_deprecated_id(old: str, new: str) -> None:
    """A ``FutureWarning`` the first time ``old`` is used in this process."""
    import warnings

    if old not in _WARNED:
        _WARNED.add(old)
        warnings.warn(f"env id {old!r} is deprecated; use {new!r} (the same env)", FutureWarning, stacklevel=3)


def make_alias(**kwargs: Any) -> Any:
    """Entry point of a deprecated id: warn once, then build the current id's env with the same kwargs."""
    import gymnasium as gym

    new, old = kwargs.pop(ALIAS_OF), kwargs.pop(ALIAS)
    warn_deprecated_id(old, new)
    spec = gym.spec(new)
    return env_class(spec.entry_point)(**{**(spec.kwargs or {}), **kwargs})


class SuiteError(ValueError):
    """The env cannot be described (unknown id, suite or task); one line saying why."""


@dataclass(frozen=True)
class EnvSuite:
    """An env family's answers to the planner's questions, for one registered id + kwargs.

    Args:
        name: The suite name episodes are recorded under (``libero_spatial``, ``robosuite``).
        tasks: Task names in index order.
        default_tasks: What ``tasks: default`` selects.
        max_episode_steps: The reference eval's step limit (None: the env's own).
        init_states: Number of fixed initial states of a task (by index); None = the family has
            none (episode e differs by seed only, ``init_state_ids`` does not apply).
        scene_seeding: Whether the env takes ``scene_seeding`` / ``scene_seed`` (reference scene
            streams, as LIBERO's fixture placement needs).
        default_scene_seed: S of the reference scene stream when neither ``scene.seed`` nor the
            policy declares one.
        task_kwarg: The ``gymnasium.make`` keyword that selects a task by index (None: one task).
        instructions: Task instructions in index order, where known without building an env.
    """

    name: str
    tasks: tuple[str, ...]
    default_tasks: tuple[int, ...] = (0,)
    max_episode_steps: int | None = None
    init_states: Callable[[int], int] | None = None
    scene_seeding: bool = False
    default_scene_seed: int = DEFAULT_SCENE_SEED
    task_kwarg: str | None = None
    instructions: tuple[str, ...] = field(default=())

    def make_kwargs(self, task_index: int, scene_seeding: str, scene_seed: int) -> dict[str, Any]:
        """The ``gymnasium.make`` keywords that select task ``task_index`` (and its scene stream)."""
        kwargs: dict[str, Any] = {}
        if self.task_kwarg is not None:
            kwargs[self.task_kwarg] = int(task_index)
        if self.scene_seeding:
            kwargs["scene_seeding"] = str(scene_seeding)
            kwargs["scene_seed"] = int(scene_seed)
        return kwargs


def env_class(entry_point: Any) -> type:
    """The class a Gymnasium entry point (``"module:Class"`` or a callable) names."""
    if isinstance(entry_point, str):
        module, _, attr = entry_point.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    return entry_point


def describe(env_id: str, kwargs: dict[str, Any]) -> EnvSuite:
    """The :class:`EnvSuite` of a registered id with ``kwargs`` over its registered ones.

    Raises:
        SuiteError: the id is unknown, its env class declares no ``describe``, or it refuses the kwargs.
    """
    import gymnasium as gym

    module, _, name = env_id.rpartition(":")  # "module:id" (as gymnasium.make takes it): import the registrar
    try:
        if module:
            importlib.import_module(module)
        spec = gym.spec(name)
    except (gym.error.Error, ImportError) as e:
        raise SuiteError(f"env.id {env_id!r} is not a registered env ({type(e).__name__}: {e})") from None
    if ALIAS_OF in (spec.kwargs or {}):
        warn_deprecated_id(spec.kwargs[ALIAS], spec.kwargs[ALIAS_OF])
        return describe(spec.kwargs[ALIAS_OF], kwargs)
    cls = env_class(spec.entry_point)
    declare = getattr(cls, "describe", None)
    if declare is None:
        raise SuiteError(f"env {env_id!r} ({getattr(cls, '__qualname__', cls)}) does not declare its suite: "
                         "give its class a `describe(**kwargs) -> EnvSuite` classmethod (see vla_gym/envs/suite.py)")
    try:
        suite = declare(**{**(spec.kwargs or {}), **kwargs})
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise SuiteError(str(e).replace("\n", " ")) from None
    if suite.max_episode_steps is None and spec.max_episode_steps is not None:
        suite = EnvSuite(**{**suite.__dict__, "max_episode_steps": int(spec.max_episode_steps)})
    return suite
