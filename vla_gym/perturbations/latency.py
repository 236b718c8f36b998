"""Latency: action delay and observation latency in control steps (not in LIBERO-plus)."""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from vla_gym.envs import contract
from vla_gym.perturbations._common import check_strength

HOLD_ACTION = contract.SETTLE_ACTION
"""What the robot executes before the first delayed command arrives: no motion, gripper open
(LIBERO's settle no-op). Episodes start with the gripper open, so this holds the start pose."""


def _delay_steps(strength: float, max_steps: int, steps: int | None, what: str) -> int:
    if steps is not None:
        if int(steps) != steps or steps < 0:
            raise ValueError(f"{what} must be a non-negative integer number of steps, got {steps!r}")
        return int(steps)
    if int(max_steps) != max_steps or max_steps < 0:
        raise ValueError(f"max_delay_steps must be a non-negative integer, got {max_steps!r}")
    return int(round(check_strength(strength) * max_steps))


class ActionDelay(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Execute, at step t, the action the policy gave at step t - k (a FIFO of k actions).

    ``k = round(s * max_delay_steps)`` (default up to 5 steps = 250 ms at 20 Hz), or
    ``delay_steps`` exactly. The first k executed actions are :data:`HOLD_ACTION` (no motion,
    gripper open). ``info["executed_action"]`` is the action actually sent to the env.

    Args:
        env: A vla_gym env (7-D actions).
        strength: In [0, 1]; 0 means no delay.
        max_delay_steps: Delay at strength 1, control steps.
        delay_steps: Fixed delay in steps (overrides the strength mapping).

    Examples:
        >>> import gymnasium as gym, numpy as np, vla_gym
        >>> from vla_gym.perturbations import ActionDelay
        >>> env = ActionDelay(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=0.0, delay_steps=2)
        >>> obs, info = env.reset(seed=0)
        >>> a = np.full(7, 0.5, dtype=np.float32)
        >>> [env.step(a)[4]["executed_action"][0] for _ in range(3)]
        [np.float32(0.0), np.float32(0.0), np.float32(0.5)]
        >>> env.close()
    """

    def __init__(self, env: gym.Env, strength: float, max_delay_steps: int = 5, delay_steps: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, max_delay_steps=max_delay_steps,
                                                 delay_steps=delay_steps)
        gym.Wrapper.__init__(self, env)
        self.strength = check_strength(strength)
        self.delay = _delay_steps(strength, max_delay_steps, delay_steps, "delay_steps")
        self._queue: deque[np.ndarray] = deque()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset and refill the FIFO with k hold actions."""
        self._queue = deque(HOLD_ACTION.copy() for _ in range(self.delay))
        return self.env.reset(seed=seed, options=options)

    def step(self, action: np.ndarray):
        """Queue ``action``; execute the one given k steps ago."""
        if self.delay == 0:
            executed = np.asarray(action)
        else:
            self._queue.append(np.array(action, dtype=np.float32, copy=True))
            executed = self._queue.popleft()
        obs, reward, terminated, truncated, info = self.env.step(executed)
        return obs, reward, terminated, truncated, {**info, "executed_action": executed}


class ObservationDelay(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Return, at step t, the observation of step t - k (camera/state pipeline latency).

    ``k = round(s * max_delay_steps)`` (default up to 5 steps), or ``delay_steps``. Until k
    steps have passed the reset observation is repeated. Reward, termination and ``info`` are
    current (the evaluator is not delayed, only what the policy sees).

    Args:
        env: Any env.
        strength: In [0, 1]; 0 means no latency.
        max_delay_steps: Latency at strength 1, control steps.
        delay_steps: Fixed latency in steps (overrides the strength mapping).

    Examples:
        >>> import gymnasium as gym, numpy as np, vla_gym
        >>> from vla_gym.perturbations import ObservationDelay
        >>> env = ObservationDelay(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=0.2)
        >>> env.delay
        1
        >>> env.close()
    """

    def __init__(self, env: gym.Env, strength: float, max_delay_steps: int = 5, delay_steps: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, max_delay_steps=max_delay_steps,
                                                 delay_steps=delay_steps)
        gym.Wrapper.__init__(self, env)
        self.strength = check_strength(strength)
        self.delay = _delay_steps(strength, max_delay_steps, delay_steps, "delay_steps")
        self._queue: deque[Any] = deque()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset; the FIFO starts full of the reset observation."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._queue = deque([obs] * (self.delay + 1), maxlen=self.delay + 1)
        return obs, info

    def step(self, action: np.ndarray):
        """Step; return the observation from k steps ago."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.delay == 0:
            return obs, reward, terminated, truncated, info
        self._queue.append(obs)
        return self._queue[0], reward, terminated, truncated, info
