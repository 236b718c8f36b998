"""The one policy API every adapter implements.

Modelled on openpi's ``BasePolicy`` (``infer(obs) -> {"actions": (H, D)}``) and LeRobot's
``predict_action_chunk``: a policy turns one observation into an *action chunk* of shape
``(T, action_dim)`` with ``T >= 1``. How a chunk is executed (open loop for ``replan_steps``,
or temporal ensembling) is decided by :mod:`vla_gym.chunking`, never by the adapter, so no
adapter keeps a hidden action queue that could leak across episodes.

A policy also declares what it consumes (:class:`PolicyInputs`): the env is built to match,
so a policy that only looks at one 224x224 camera never pays for rendering a second one.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Observation = dict[str, Any]
"""One env observation: ``images`` (camera -> uint8 HxWx3, upright), ``instruction`` (str),
``state`` (float32 (8,)), ``joint_pos`` (float32 (7,)) and, when requested, ``privileged``."""


@dataclass(frozen=True)
class PolicyInputs:
    """What a policy reads from the observation; the env is configured from this.

    Attributes:
        cameras: Camera names the policy looks at, in the order it feeds them to the model
            (``agentview``, ``wrist``). Empty for blind policies (scripted, random).
        image_size: Side of the square images the env renders, in pixels. For policies with
            published numbers this is the *reference* render size (e.g. 256 for the OpenVLA
            LIBERO eval), and the adapter applies the reference resize itself.
        uses_state: Whether the policy reads ``state`` (proprioception).
        uses_privileged: Whether the policy reads ``privileged`` object poses (scripted
            experts only; never a learned policy).
    """

    cameras: tuple[str, ...] = ()
    image_size: int = 224
    uses_state: bool = False
    uses_privileged: bool = False

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise ValueError(f"PolicyInputs.image_size must be positive, got {self.image_size}")
        object.__setattr__(self, "cameras", tuple(self.cameras))


@dataclass
class PolicyInfo:
    """Facts about a loaded policy that the runner writes into ``results.json``."""

    name: str
    action_dim: int = 7
    chunk_size: int = 1
    weight_bytes: int = 0
    dtype: str = "none"
    quantization: str = "none"
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


class Policy(abc.ABC):
    """Base class of all policies.

    Subclasses set :attr:`inputs` (what they read) and implement :meth:`act`. :meth:`reset`
    is called by the runner with every ``env.reset()``; override it when the policy keeps
    per-episode state.
    """

    inputs: PolicyInputs = PolicyInputs()

    def reset(self, *, seed: int | None = None) -> None:  # noqa: B027 - optional hook
        """Forget everything about the previous episode. ``seed`` seeds sampling policies."""

    @abc.abstractmethod
    def act(self, observation: Observation) -> np.ndarray:
        """Return an action chunk of shape ``(T, action_dim)``, ``T >= 1``, float32.

        Actions are in the env's convention: 7-D delta end-effector command
        (xyz, axis-angle, gripper with -1 = open, +1 = close), each in [-1, 1].
        """

    def info(self) -> PolicyInfo:
        """Describe the policy (name, weights, dtype); used for results bookkeeping."""
        return PolicyInfo(name=type(self).__name__)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (model memory, sockets)."""


def as_chunk(actions: np.ndarray | list[float], action_dim: int | None = None) -> np.ndarray:
    """Validate and normalise a policy output to a float32 ``(T, D)`` chunk.

    A 1-D action becomes a chunk of length one. Raises ``ValueError`` naming the problem
    for empty chunks, wrong ``action_dim`` or non-finite values, so a broken adapter fails at
    the step that produced the bad action rather than deep inside the simulator.
    """
    chunk = np.asarray(actions, dtype=np.float32)
    if chunk.ndim == 1:
        chunk = chunk[None, :]
    if chunk.ndim != 2 or chunk.shape[0] == 0:
        raise ValueError(f"policy returned actions of shape {chunk.shape}; expected (T, D) with T >= 1")
    if action_dim is not None and chunk.shape[1] != action_dim:
        raise ValueError(f"policy returned {chunk.shape[1]}-D actions; the env expects {action_dim}-D")
    if not np.all(np.isfinite(chunk)):
        raise ValueError(f"policy returned non-finite actions: {chunk}")
    return chunk
