"""The one policy API every adapter implements (v2: batch-first).

Modelled on openpi's ``BasePolicy`` (``infer(obs) -> {"actions": (H, D)}``) and LeRobot's
``predict_action_chunk``, but batch-first so one model call can serve several envs:

- ``act(observations, env_ids=None) -> ActionChunk``: ``observations`` is a *list* of B
  observation dicts (B >= 1), one per env; ``env_ids`` (default ``0..B-1``) names the env each
  row belongs to, so policies with per-episode state (an RNG, a history, a replay cursor) keep
  it per env. The result holds ``actions`` float32 ``(B, T, D)`` and ``info`` (per-call
  ``timing_ms`` split into ``preprocess`` / ``model`` / ``postprocess``, and anything else the
  policy wants recorded). Row b of a batched call equals a B = 1 call on observation b.
- ``reset(env_ids=None, seeds=None)``: forget the episode of those envs (all when ``None``);
  per-env boundaries, as openpi/LeRobot policies have them.
- :func:`act_one` is the one-line helper for single-observation callers.

How a chunk is executed (open loop for ``replan_steps``, or temporal ensembling) is decided by
:mod:`vla_gym.chunking`, never by the adapter, so no adapter keeps a hidden action queue that
could leak across episodes.

A policy declares, as data on its class (or instance), what the runner needs to know: the
inputs it reads (:class:`PolicyInputs`; the env is built to match, so a policy that only
looks at one 224x224 camera never pays for rendering a second one), its chunk execution
defaults (:class:`ChunkExecution`), the scene seed of its reference LIBERO eval
(``reference_scene_seed``), whether it loads weights (``loads_weights``: only then is a
quantization config passed, explicitly, as ``quantization=``), which modules quantization
must keep in full precision (``quantization_skip``) and whether ``act`` is free of per-env side
effects (``stateless_act``: the policy server may then retry a failed batch row by row).
Explicit config values override them.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

Observation = dict[str, Any]
"""One env observation: ``images`` (camera -> uint8 HxWx3, upright), ``instruction`` (str),
``state`` (float32 (8,)), ``joint_pos`` (float32 (7,)) and, when requested, ``privileged``."""

CHUNK_MODES = ("open_loop", "temporal_ensemble")
TIMING_STAGES = ("preprocess", "model", "postprocess")


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


@dataclass(frozen=True)
class ChunkExecution:
    """How the runner executes this policy's chunks unless the config says otherwise.

    Attributes:
        mode: ``open_loop`` (execute ``replan_steps`` actions, then query again) or
            ``temporal_ensemble`` (query every step, average overlapping predictions).
        replan_steps: Actions executed per chunk in open loop; ``None`` = the whole chunk.
    """

    mode: str = "open_loop"
    replan_steps: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in CHUNK_MODES:
            raise ValueError(f"unknown chunk execution mode {self.mode!r}; valid: {CHUNK_MODES}")
        if self.replan_steps is not None and self.replan_steps < 1:
            raise ValueError(f"replan_steps must be >= 1 (or None for the whole chunk), got {self.replan_steps}")


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


@dataclass(frozen=True)
class ActionChunk:
    """The result of one ``act`` call: ``actions`` float32 ``(B, T, D)`` and per-call ``info``.

    ``info["timing_ms"]``, when present, maps ``preprocess`` / ``model`` / ``postprocess`` to
    the wall time of that stage for the whole batch; the runner records what it finds here.
    """

    actions: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "actions", as_chunk_batch(self.actions))

    @property
    def batch_size(self) -> int:
        """B, the number of rows (envs)."""
        return int(self.actions.shape[0])


class Policy(abc.ABC):
    """Base class of all policies.

    Subclasses set :attr:`inputs` (what they read) and implement :meth:`act`. :meth:`reset`
    is called by the runner at every episode start of an env; override it when the policy
    keeps per-episode state, keyed by env id.
    """

    inputs: PolicyInputs = PolicyInputs()
    execution: ChunkExecution = ChunkExecution()
    reference_scene_seed: int | None = None
    """S of ``env.seed(S)`` in this policy's reference LIBERO eval (None: no reference eval)."""
    loads_weights: bool = False
    """True for policies whose constructor takes ``quantization=`` (torch models)."""
    quantization_skip: tuple[str, ...] = ()
    """Module names that int8/int4 weight quantization must leave unquantized (an entry matches a
    component of the dotted name, e.g. ``lm_head``). The family's own list: the core names none."""
    weight_paths: tuple[str, ...] = ("checkpoint", "base_checkpoint")
    """Policy-config keys that name local files or dirs the outputs are loaded from (weights, adapters,
    stats, tokenizers). The run fingerprint digests those that are set (:mod:`vla_gym.weights`), so a
    run dir never resumes with other files at the same paths."""
    batch_wait_ms: float | None = None
    """With parallel envs, how long an env that needs a chunk waits for envs still mid-step so they
    share one ``act`` call: None = until they all reply (lockstep batching, what a GPU model wants);
    0 = never (cheap policies: a shared call saves nothing, and waiting makes every env as slow as
    the slowest)."""
    stateless_act: bool = False
    """True only when ``act`` has no per-env side effects (no RNG, history or replay cursor advanced
    per env, nothing changed when it raises) and each row depends on its own observation alone. A
    batch that raised may then be retried row by row without changing any env's result: the policy
    server does that to isolate the row at fault. False (the safe default) for any policy with
    per-env state: the server then answers a failed batch's other rows with a retryable error."""

    def reset(self, env_ids: Sequence[int] | None = None,  # noqa: B027 - optional hook
              seeds: Sequence[int | None] | None = None) -> None:
        """Forget the episode of ``env_ids`` (all envs when None); ``seeds`` seed sampling policies."""

    @abc.abstractmethod
    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None) -> ActionChunk:
        """Action chunks for B observations: ``actions`` of shape ``(B, T, action_dim)``, float32.

        Actions are in the env's convention: 7-D delta end-effector command
        (xyz, axis-angle, gripper with -1 = open, +1 = close), each in [-1, 1].
        """

    def info(self) -> PolicyInfo:
        """Describe the policy (name, weights, dtype); used for results bookkeeping."""
        return PolicyInfo(name=type(self).__name__)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (model memory, sockets)."""


def resolve_env_ids(observations: Sequence[Observation], env_ids: Sequence[int] | None) -> list[int]:
    """``env_ids`` checked against the batch, or ``0..B-1``; raises on a size mismatch or repeats."""
    if isinstance(observations, dict):
        raise TypeError("act() takes a list of observation dicts; for one observation use act_one(policy, obs)")
    n = len(observations)
    if n == 0:
        raise ValueError("act() needs at least one observation")
    ids = list(range(n)) if env_ids is None else [int(i) for i in env_ids]
    if len(ids) != n:
        raise ValueError(f"{n} observations but {len(ids)} env_ids")
    if len(set(ids)) != n:
        raise ValueError(f"env_ids must be distinct, got {ids}")
    return ids


def reset_targets(env_ids: Sequence[int] | None, seeds: Sequence[int | None] | None) -> list[tuple[int, int | None]]:
    """Pair each env id with its seed for :meth:`Policy.reset` (``env_ids`` None means "all": returns [])."""
    if env_ids is None:
        if seeds is not None and len(seeds) > 0:
            raise ValueError("seeds given without env_ids; say which envs they are for")
        return []
    ids = [int(i) for i in env_ids]
    seeds = [None] * len(ids) if seeds is None else list(seeds)
    if len(seeds) != len(ids):
        raise ValueError(f"{len(ids)} env_ids but {len(seeds)} seeds")
    return list(zip(ids, seeds))


def act_one(policy: Policy, observation: Observation, env_id: int = 0) -> np.ndarray:
    """One observation in, its ``(T, D)`` chunk out: ``policy.act([observation])`` for single-env callers."""
    return policy.act([observation], env_ids=[env_id]).actions[0]


class StageTimer:
    """Wall-clock ms of named stages for ``ActionChunk.info["timing_ms"]``.

    >>> timer = StageTimer()
    >>> with timer("model"):
    ...     pass
    >>> sorted(timer.ms)
    ['model']
    """

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._stage: str | None = None
        self._t0 = 0.0

    def __call__(self, stage: str) -> StageTimer:
        """Time the ``with`` block that follows as ``stage``."""
        self._stage = stage
        return self

    def __enter__(self) -> StageTimer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stage is not None
        self.ms[self._stage] = self.ms.get(self._stage, 0.0) + 1e3 * (time.perf_counter() - self._t0)
        self._stage = None


def as_chunk(actions: np.ndarray | list[float], action_dim: int | None = None) -> np.ndarray:
    """Validate and normalise one env's policy output to a float32 ``(T, D)`` chunk.

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


def as_chunk_batch(actions: np.ndarray) -> np.ndarray:
    """Validate a batched policy output: float32 ``(B, T, D)``, B >= 1, T >= 1, all finite."""
    batch = np.asarray(actions, dtype=np.float32)
    if batch.ndim != 3 or batch.shape[0] == 0 or batch.shape[1] == 0:
        raise ValueError(f"policy returned actions of shape {batch.shape}; expected (B, T, D) with B, T >= 1")
    if not np.all(np.isfinite(batch)):
        raise ValueError(f"policy returned non-finite actions: {batch}")
    return batch
