"""A toy env suite declared entirely from the test tree: one module + one YAML (tests/conf/env/toy.yaml).

It proves that a new suite needs no edit in ``vla_gym/``: the planner learns its tasks, default
tasks and step limit from :meth:`ToyEnv.describe`, the builder selects a task through the declared
``task_kwarg``, and the CLI runs it with ``hydra.searchpath=[file://tests/conf]``. Pure NumPy: a
point on a line that must reach ``goal`` (one step right per positive ``action[0]``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vla_gym.envs.suite import EnvSuite

TASKS = ("reach_3", "reach_5")
INSTRUCTIONS = ("move right three times", "move right five times")
ENV_ID = "vla_gym_toy/Toy-v0"


class ToyEnv(gym.Env):
    """The toy suite's env, following the observation contract of :mod:`vla_gym.envs.contract`."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    @classmethod
    def describe(cls, task: int = 0, **_: Any) -> EnvSuite:
        return EnvSuite(name="toy", tasks=TASKS, default_tasks=(0, 1), max_episode_steps=8, task_kwarg="task",
                        instructions=INSTRUCTIONS)

    def __init__(self, task: int = 0, cameras: tuple[str, ...] = ("agentview",), image_size: int = 32,
                 privileged: bool = False, render_mode: str | None = None, render_camera: str = "agentview",
                 render_size: int = 32, render_quality: str = "reference") -> None:
        self.task_index = int(task)
        self.suite_name, self.task_name, self.instruction = "toy", TASKS[self.task_index], INSTRUCTIONS[self.task_index]
        self.goal = (3, 5)[self.task_index]
        self.cameras, self.size, self.render_size = tuple(cameras), int(image_size), int(render_size)
        self.render_mode = render_mode
        self.observation_space = spaces.Dict({
            "images": spaces.Dict({c: spaces.Box(0, 255, (self.size, self.size, 3), np.uint8) for c in self.cameras}),
            "state": spaces.Box(-np.inf, np.inf, (8,), np.float32),
            "instruction": spaces.Text(256),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.pos = 0

    def _image(self, size: int) -> np.ndarray:
        img = np.zeros((size, size, 3), np.uint8)
        img[:, : max(1, size * self.pos // max(self.goal, 1))] = 200
        return img

    def _obs(self) -> dict[str, Any]:
        state = np.zeros(8, np.float32)
        state[0] = self.pos
        return {"images": {c: self._image(self.size) for c in self.cameras}, "state": state,
                "instruction": self.instruction}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.pos += int(np.asarray(action)[0] > 0)
        success = self.pos >= self.goal
        return self._obs(), float(success), success, False, {"is_success": success}

    def render(self) -> np.ndarray:
        return self._image(self.render_size)


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=f"{__name__}:ToyEnv", max_episode_steps=8, disable_env_checker=True)
