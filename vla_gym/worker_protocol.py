"""Messages between the parent and its env worker processes (:mod:`vla_gym.parallel`).

One frozen dataclass per message, sent whole over a ``multiprocessing`` pipe (both ends run this
package's code, so these are the only classes unpickled there). The parent tells replies apart by
type, never by tuple length or position.

Parent -> worker: :class:`Reset`, :class:`Step`, :class:`Close`.
Worker -> parent: :class:`Building` (a progress notice), :class:`ResetDone`, :class:`StepDone`,
:class:`Failed` (the episode's error; the worker drops its env).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# ---------------------------------------------------------------------------- parent -> worker
@dataclass(frozen=True, slots=True)
class Reset:
    """Start an episode: build the task's env if the worker holds another (or none), then reset it."""

    task_index: int
    episode_index: int
    seed: int
    init_state_id: int | None
    record_video: bool
    scene_seed: int


@dataclass(frozen=True, slots=True)
class Step:
    """Execute one action in the worker's env."""

    action: Any


@dataclass(frozen=True, slots=True)
class Close:
    """Close the env and exit."""


# ---------------------------------------------------------------------------- worker -> parent
@dataclass(frozen=True, slots=True)
class Building:
    """The worker is building an env (slow: the parent's watchdog allows the build limit)."""


@dataclass(frozen=True, slots=True)
class ResetDone:
    """The first observation of an episode."""

    obs: dict[str, Any]
    info: dict[str, Any]
    names: tuple[str, str]
    """``(suite, task)`` as the env itself names them (a LIBERO-PRO suite's, not the base suite's)."""
    done: bool
    video: str | None = None


@dataclass(frozen=True, slots=True)
class StepDone:
    """The result of one step."""

    obs: dict[str, Any]
    """The observation after the step (the policy's next input)."""
    reward: float
    terminated: bool
    """Success (the env's own end of the episode)."""
    truncated: bool
    """The step limit."""
    info: dict[str, Any] = field(default_factory=dict)
    video: str | None = None
    """The episode's video path, once the episode ended and the video is written."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The command raised; the episode is an error."""

    error: str
    traceback: str = ""


ToWorker = Reset | Step | Close
FromWorker = Building | ResetDone | StepDone | Failed
