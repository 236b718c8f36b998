"""Test-only env wrapper that fails on chosen episodes, used through ``perturbation.wrappers``.

    perturbation.wrappers=[{_target_:tests.faulty_env.FailOnSeed,exit_on:[8],raise_on:[9],hang_on:[10]}]

``exit`` ends the worker process at once (``os._exit``: like a segfault, no clean-up), ``raise``
raises inside ``step``, ``hang`` never returns (for the stall watchdog). Each fault fires at
``at_step`` of the episodes whose reset seed is listed.
"""

from __future__ import annotations

import os
import time
from typing import Any

import gymnasium as gym


class FailOnSeed(gym.Wrapper):
    def __init__(self, env: gym.Env, exit_on: Any = (), raise_on: Any = (), hang_on: Any = (),
                 at_step: int = 2) -> None:
        super().__init__(env)
        self.faults = {**{int(s): "exit" for s in exit_on}, **{int(s): "raise" for s in raise_on},
                       **{int(s): "hang" for s in hang_on}}
        self.at_step = int(at_step)
        self._fault: str | None = None
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._fault = self.faults.get(seed) if seed is not None else None
        self._t = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self._t += 1
        if self._fault and self._t >= self.at_step:
            if self._fault == "exit":
                os._exit(3)
            if self._fault == "hang":
                time.sleep(3600)
            raise RuntimeError(f"injected fault at step {self._t}")
        return self.env.step(action)


class SlowOnSeed(gym.Wrapper):
    """Sleeps ``delay_s`` in every step of the episodes whose reset seed is listed (a slow env)."""

    def __init__(self, env: gym.Env, seeds: Any = (), delay_s: float = 0.1) -> None:
        super().__init__(env)
        self.seeds, self.delay_s, self._slow = {int(s) for s in seeds}, float(delay_s), False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._slow = seed in self.seeds
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        if self._slow:
            time.sleep(self.delay_s)
        return self.env.step(action)
