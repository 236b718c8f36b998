"""Execution timing: what one env executes while its policy call is "in flight" (simulated time).

The policy call still blocks the simulator (runs stay deterministic and independent of machine
load); what changes is *which* actions the env executes meanwhile. A query issued on the
observation of step ``t`` with latency ``L`` delivers its chunk at step ``t + d``,
``d = ceil(L / control_period)``.

- ``synchronous``: today's executors (:mod:`vla_gym.chunking`), unchanged; the world is frozen.
- ``blocking`` (:class:`BlockingExecutor`): the robot waits: ``d`` hold steps, then the chunk,
  executed by an inner synchronous executor (stop-and-go).
- ``async`` (:class:`AsyncExecutor`): the env keeps executing the current chunk while the next is
  computed; the new chunk's first ``d`` actions are stale (their time has passed) and skipped;
  ``replace`` switches at arrival, ``temporal_ensemble`` averages the overlap (ACT weights).

Hold = the no-op of the OSC delta action space: zero motion, gripper as last executed (open at
episode start, as after LIBERO's settle steps).

The contract the episode loop follows, per env, every step (docs/how-to/real-time.md):

1. ``if ex.needs_chunk:`` call the policy on this step's observation, then
   ``submit(ex, chunk, latency_ms)`` (the latency from the env's latency source);
2. ``action = ex.next_action()`` -- always an action (hold when nothing is executable); this
   advances the executor's clock by one control step; ``ex.last_step`` says what it was;
3. ``env.step(action)``; ``step_record(ex, queried)`` says what the step was, for every timing.

``reset()`` at the env's episode start. Each executor has its own clock, so with several envs
one env's simulated latency never delays another.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_gym.chunking import Executor, call_policy, make_executor
from vla_gym.envs.contract import ACTION_DIM, CONTROL_FREQ_HZ, GRIPPER_OPEN
from vla_gym.policy import as_chunk

TIMINGS = ("synchronous", "blocking", "async")
HANDOFFS = ("replace", "temporal_ensemble", "rtc")
RTC_TIMING = "handoff 'rtc' (real-time chunking) needs execution.timing=async: it guides a chunk computed while the old one runs"
RTC_SCHEDULES = ("zeros", "ones", "linear", "exp")
RTC_GUIDANCE = ("original", "lerobot")
DEFAULT_CONTROL_PERIOD_MS = 1000.0 / CONTROL_FREQ_HZ
TRIGGER_HISTORY = 10
"""Queries whose delay the default async trigger takes the maximum over (RTC paper: b = 10)."""


def delay_steps(latency_ms: float, control_period_ms: float = DEFAULT_CONTROL_PERIOD_MS) -> int:
    """``d = ceil(L / control_period)``: control steps until a chunk queried now arrives.

    The ratio is rounded to 9 decimals first, so 100 ms at 50 ms gives 2, not 3 from float noise.
    """
    if not math.isfinite(latency_ms) or latency_ms < 0:
        raise ValueError(f"latency must be a finite number of ms >= 0, got {latency_ms!r}")
    if not control_period_ms > 0:
        raise ValueError(f"control period must be > 0 ms, got {control_period_ms!r}")
    return math.ceil(round(latency_ms / control_period_ms, 9))


def hold_action(gripper: float) -> np.ndarray:
    """The env's no-op: zero translation and rotation delta, gripper command unchanged."""
    a = np.zeros(ACTION_DIM, dtype=np.float32)
    a[-1] = gripper
    return a


@dataclass(frozen=True)
class StepRecord:
    """What one executed step was, for the trajectory and the inference metrics.

    Attributes:
        query: A policy query was issued on this step's observation.
        latency_ms: That query's simulated latency (NaN when no query).
        delay_steps: Its delay ``d`` in control steps (-1 when no query).
        hold: The action was the no-op because nothing was executable.
        chunk_start: The action is the first executed one of a newly arrived chunk.
        stale: Actions of a chunk arriving at this step that were skipped as already past.
    """

    query: bool = False
    latency_ms: float = math.nan
    delay_steps: int = -1
    hold: bool = False
    chunk_start: bool = False
    stale: int = 0


class _Timed:
    """Clock, hold action and per-step record shared by the timed executors."""

    def __init__(self, control_period_ms: float) -> None:
        delay_steps(0.0, control_period_ms)  # validates the period
        self.control_period_ms = float(control_period_ms)
        self.t = 0
        self.last_step = StepRecord()
        self._gripper = GRIPPER_OPEN
        self._query: tuple[float, int] | None = None  # (latency_ms, d) of this step's query
        self._stale = 0
        self._chunk_start = False

    def _reset_clock(self) -> None:
        self.t = 0
        self.last_step = StepRecord()
        self._gripper = GRIPPER_OPEN
        self._query, self._stale, self._chunk_start = None, 0, False

    def _finish_step(self, action: np.ndarray | None) -> np.ndarray:
        hold = action is None
        if hold:
            action = hold_action(self._gripper)
        else:
            self._gripper = float(action[-1])
        lat, d = self._query if self._query is not None else (math.nan, -1)
        self.last_step = StepRecord(query=self._query is not None, latency_ms=lat, delay_steps=d, hold=hold,
                                    chunk_start=self._chunk_start and not hold, stale=self._stale)
        self._query, self._stale, self._chunk_start = None, 0, False
        self.t += 1
        return action


class BlockingExecutor(_Timed):
    """The robot waits for each answer: ``d`` hold steps, then the chunk (stop-and-go).

    Args:
        inner: The synchronous executor that runs the chunks once they arrive
            (:class:`~vla_gym.chunking.OpenLoopExecutor` or ``TemporalEnsembleExecutor``; the
            latter's clock counts executed actions only: the world waited).
        control_period_ms: One control step (50 ms at LIBERO's 20 Hz).
    """

    def __init__(self, inner: Executor, control_period_ms: float = DEFAULT_CONTROL_PERIOD_MS) -> None:
        super().__init__(control_period_ms)
        self.inner = inner
        self._in_flight: tuple[int, np.ndarray] | None = None  # (arrival step, chunk)

    def reset(self) -> None:
        """Episode start: drop the plan and any chunk in flight."""
        self.inner.reset()
        self._in_flight = None
        self._reset_clock()

    @property
    def needs_chunk(self) -> bool:
        """True when no chunk is in flight and the wrapped executor has run out."""
        self._deliver()
        return self._in_flight is None and self.inner.needs_chunk

    def add_chunk(self, chunk: np.ndarray, latency_ms: float = 0.0) -> None:
        """A chunk queried on this step's observation; it arrives ``d`` steps from now."""
        if self._in_flight is not None or not self.inner.needs_chunk:
            raise RuntimeError("blocking executor got a chunk it did not ask for (needs_chunk is False)")
        d = delay_steps(latency_ms, self.control_period_ms)
        self._query = (float(latency_ms), d)
        self._in_flight = (self.t + d, as_chunk(chunk))
        self._deliver()

    def _deliver(self) -> None:
        if self._in_flight is not None and self._in_flight[0] <= self.t:
            self.inner.add_chunk(self._in_flight[1])
            self._in_flight = None
            self._chunk_start = True

    def next_action(self) -> np.ndarray:
        """This step's action: hold while the answer is in flight, else the inner executor's."""
        self._deliver()
        if self._in_flight is not None:
            return self._finish_step(None)
        if self.inner.needs_chunk:
            raise RuntimeError("no action queued: add a chunk first (needs_chunk is True)")
        return self._finish_step(self.inner.next_action())


class AsyncExecutor(_Timed):
    """Inference overlaps execution; chunks are time-aligned to the step they were queried at.

    Row ``i`` of a chunk queried at step ``s`` is the action for step ``s + i``. At most one
    query is in flight. A query is issued when the newest chunk has at most
    ``max(trigger_remaining, H - replan_steps)`` actions left for the steps from now on
    (``H`` its length); with ``trigger_remaining=None`` it is the largest delay of the last
    :data:`TRIGGER_HISTORY` queries, so at a steady latency the new chunk arrives just as the
    old one runs out. When nothing covers the current step the env holds. A chunk no longer
    than its delay would be all stale; its last row is executed at arrival instead, so a
    single-action policy (OpenVLA, the scripted expert) acts late rather than never.

    Args:
        handoff: ``replace`` (the newest arrived chunk covering the step wins),
            ``temporal_ensemble`` (all arrived chunks covering the step, weights ``exp(-k i)``,
            ``i = 0`` for the oldest: ACT / TinyVLA) or ``rtc`` (executed as ``replace``; the
            policy guides each new chunk by :meth:`leftover`, see :class:`TimedActor`).
        trigger_remaining: See above; ``>= 0``.
        replan_steps: Execution horizon ``s``: re-query once ``s`` steps of the newest chunk have
            passed (openpi LIBERO 5, OFT 8); ``None`` = only the remaining-actions trigger.
        k: Temporal-ensemble weight.
        control_period_ms: One control step.

    With zero latency, ``replace`` equals ``OpenLoopExecutor(replan_steps)`` and
    ``temporal_ensemble`` with ``replan_steps=1`` equals ``TemporalEnsembleExecutor(k)``.
    """

    def __init__(self, handoff: str = "replace", trigger_remaining: int | None = None,
                 replan_steps: int | None = None, k: float = 0.01,
                 control_period_ms: float = DEFAULT_CONTROL_PERIOD_MS) -> None:
        super().__init__(control_period_ms)
        check_handoff(handoff)
        if trigger_remaining is not None and (int(trigger_remaining) != trigger_remaining or trigger_remaining < 0):
            raise ValueError(f"trigger_remaining must be an integer >= 0 (or null), got {trigger_remaining!r}")
        if replan_steps is not None and replan_steps < 1:
            raise ValueError(f"replan_steps must be >= 1 (or null for the whole chunk), got {replan_steps}")
        if k < 0:
            raise ValueError(f"temporal ensembling k must be >= 0, got {k}")
        self.handoff = handoff
        self.trigger_remaining = None if trigger_remaining is None else int(trigger_remaining)
        self.replan_steps = replan_steps
        self.k = k
        self._chunks: list[tuple[int, np.ndarray]] = []  # arrived (query step, chunk), oldest first
        self._in_flight: tuple[int, int, np.ndarray] | None = None  # (query step, arrival step, chunk)
        self._delays: deque[int] = deque(maxlen=TRIGGER_HISTORY)

    def reset(self) -> None:
        """Episode start: forget all chunks, the one in flight and the delay history."""
        self._chunks.clear()
        self._in_flight = None
        self._delays.clear()
        self._reset_clock()

    def _deliver(self) -> None:
        if self._in_flight is not None and self._in_flight[1] <= self.t:
            start, _, chunk = self._in_flight
            self._in_flight = None
            if self.t - start >= len(chunk):  # all past: act on its last row now, late (single-action policies)
                start = self.t - len(chunk) + 1
            self._stale = self.t - start
            self._chunks.append((start, chunk))
            self._chunk_start = True

    def _trigger(self) -> int:
        trig = self.trigger_remaining
        if trig is None:
            trig = max(self._delays, default=0)
        if self.replan_steps is not None and self._chunks:
            trig = max(trig, len(self._chunks[-1][1]) - self.replan_steps)
        return trig

    def leftover(self) -> np.ndarray | None:
        """The newest arrived chunk's rows for this step on (what will run while a query made now is in
        flight): RTC's ``prev_actions``; None when nothing is left."""
        if not self._chunks:
            return None
        start, chunk = self._chunks[-1]
        rows = chunk[max(0, self.t - start):]
        return rows.copy() if len(rows) else None

    @property
    def remaining(self) -> int:
        """Actions of the newest arrived chunk for this step and the ones after it."""
        if not self._chunks:
            return 0
        start, chunk = self._chunks[-1]
        return max(0, start + len(chunk) - self.t)

    @property
    def needs_chunk(self) -> bool:
        """True when no query is in flight and the newest chunk is down to the trigger."""
        self._deliver()
        return self._in_flight is None and self._query is None and self.remaining <= self._trigger()

    def add_chunk(self, chunk: np.ndarray, latency_ms: float = 0.0) -> None:
        """A chunk queried on this step's observation; it arrives ``d`` steps from now."""
        if self._in_flight is not None or self._query is not None:
            raise RuntimeError("async executor got a chunk while one is in flight (needs_chunk is False)")
        d = delay_steps(latency_ms, self.control_period_ms)
        self._query = (float(latency_ms), d)
        self._delays.append(d)
        self._in_flight = (self.t, self.t + d, as_chunk(chunk))
        self._deliver()

    def next_action(self) -> np.ndarray:
        """This step's action from the arrived chunks covering it; hold if none does."""
        self._deliver()
        t = self.t
        self._chunks = [(s, c) for s, c in self._chunks if s + len(c) > t]  # drop what has run out
        if not self._chunks:
            return self._finish_step(None)
        if self.handoff in ("replace", "rtc"):
            start, chunk = self._chunks[-1]
            self._chunks = self._chunks[-1:]
            return self._finish_step(chunk[t - start].copy())
        preds = np.stack([c[t - s] for s, c in self._chunks])  # as TemporalEnsembleExecutor computes it
        weights = np.exp(-self.k * np.arange(len(preds)))
        weights /= weights.sum()
        return self._finish_step((weights[:, None] * preds).sum(axis=0).astype(np.float32))


def check_handoff(handoff: str) -> None:
    """Refuse unknown handoffs."""
    if handoff not in HANDOFFS:
        raise ValueError(f"unknown execution.handoff {handoff!r}; valid: {', '.join(HANDOFFS)}")


TimedExecutor = Executor | BlockingExecutor | AsyncExecutor


def make_timed_executor(timing: str = "synchronous", *, mode: str = "open_loop", replan_steps: int | None = None,
                        k: float = 0.01, handoff: str | None = None, trigger_remaining: int | None = None,
                        control_period_ms: float = DEFAULT_CONTROL_PERIOD_MS) -> TimedExecutor:
    """One env's executor for ``execution.timing`` and the chunk config.

    ``synchronous`` returns today's executor (:func:`vla_gym.chunking.make_executor`) unchanged.
    In ``async``, chunk mode ``temporal_ensemble`` means a query every step (``replan_steps=1``)
    and, unless ``handoff`` is given, the ``temporal_ensemble`` handoff; ``open_loop`` means
    ``replace`` unless given.
    """
    if handoff is not None:
        check_handoff(handoff)
    if timing == "synchronous":
        return make_executor(mode, replan_steps, k)
    if timing == "blocking":
        if handoff == "rtc":
            raise ValueError(RTC_TIMING)
        return BlockingExecutor(make_executor(mode, replan_steps, k), control_period_ms)
    if timing == "async":
        make_executor(mode)  # raises the chunk-mode error for an unknown mode
        if mode == "temporal_ensemble":
            replan_steps = 1
        if handoff is None:
            handoff = "temporal_ensemble" if mode == "temporal_ensemble" else "replace"
        return AsyncExecutor(handoff, trigger_remaining, replan_steps, k, control_period_ms)
    raise ValueError(f"unknown execution.timing {timing!r}; valid: {', '.join(TIMINGS)}")


def submit(executor: TimedExecutor, chunk: np.ndarray, latency_ms: float = 0.0) -> None:
    """Hand ``executor`` a chunk queried on this step's observation; synchronous ones ignore the latency."""
    if isinstance(executor, (BlockingExecutor, AsyncExecutor)):
        executor.add_chunk(chunk, latency_ms)
    else:
        executor.add_chunk(chunk)


def step_record(executor: TimedExecutor, queried: bool, latency_ms: float = math.nan) -> StepRecord:
    """The :class:`StepRecord` of the step just executed; for synchronous executors, from ``queried``."""
    rec = getattr(executor, "last_step", None)
    if isinstance(rec, StepRecord):
        return rec
    return StepRecord(query=queried, latency_ms=latency_ms if queried else math.nan,
                      delay_steps=0 if queried else -1, chunk_start=queried)


class TimedActor:
    """A policy with one timed executor and one latency source per env (the loop contract in one place).

    Same surface as :class:`vla_gym.chunking.ChunkedActor` (``reset``, ``step``, ``executors``,
    ``num_queries``, ``last_call``) plus ``records``: env id -> the :class:`StepRecord` of its
    latest step. One batched ``act`` per step for the envs whose executor needs a chunk; each
    env's latency comes from its own source, so one env's simulated latency never delays another.

    Args:
        policy: The (batch-first) policy.
        executors: One per env id ``0..n-1`` (:func:`make_timed_executor`).
        sources: One :class:`~vla_gym.latency_sources.LatencySource` per env (``None`` = zero latency).
    """

    def __init__(self, policy: Any, executors: list[TimedExecutor], sources: list[Any] | None = None,
                 rtc: dict[str, Any] | None = None) -> None:
        if not executors:
            raise ValueError("TimedActor needs at least one executor")
        if sources is not None and len(sources) != len(executors):
            raise ValueError(f"{len(sources)} latency sources for {len(executors)} executors")
        self.policy = policy
        self.executors = list(executors)
        self.sources = list(sources) if sources is not None else [None] * len(executors)
        self.num_queries = [0] * len(executors)
        self.records: dict[int, StepRecord] = {}
        self.last_call: dict[str, Any] | None = None
        self.rtc = dict(rtc or {})
        if any(getattr(ex, "handoff", None) == "rtc" for ex in self.executors) and not getattr(
                policy, "supports_rtc", False):
            raise ValueError(f"execution.handoff: handoff 'rtc' (real-time chunking) needs a policy that supports "
                             f"it (pi0, pi05); {type(policy).__name__} does not: use handoff=replace or "
                             "temporal_ensemble")

    def _rtc_requests(self, need: list[int], latency: dict[int, float]) -> list[Any] | None:
        """One ``RTCRequest`` per queried env whose executor hands off by RTC (None where nothing is left).

        The delay ``d`` is the query's own simulated latency, drawn before the call, except for the
        ``measured`` source, whose latency is known only after it: then the largest recent delay
        (the RTC paper's delay buffer) is the estimate.
        """
        from vla_gym.latency_sources import MeasuredLatency

        if not any(getattr(self.executors[i], "handoff", None) == "rtc" for i in need):
            return None
        from vla_gym.policies.pi0.rtc import RTCRequest

        requests: list[Any] = []
        for i in need:
            ex, src = self.executors[i], self.sources[i]
            prev = ex.leftover() if getattr(ex, "handoff", None) == "rtc" else None
            if src is not None and not isinstance(src, MeasuredLatency):
                latency[i] = src.next_ms()
                d = delay_steps(latency[i], ex.control_period_ms)
            else:
                d = max(getattr(ex, "_delays", ()) or [0])
            requests.append(None if prev is None else RTCRequest(prev_actions=prev, inference_delay=d, space="env",
                                                                 **self.rtc))
        return requests

    def reset(self, env_ids: list[int] | None = None, seeds: list[int | None] | None = None,
              tasks: list[str | None] | None = None, episode_indices: list[int | None] | None = None) -> None:
        """Episode start of ``env_ids`` (all when None): executors, latency sources and the policy."""
        ids = list(range(len(self.executors))) if env_ids is None else list(env_ids)
        for n, i in enumerate(ids):
            self.executors[i].reset()
            self.num_queries[i] = 0
            self.records.pop(i, None)
            if self.sources[i] is not None:
                self.sources[i].reset(seed=(seeds[n] if seeds else None) or 0, task=tasks[n] if tasks else None,
                                      episode_index=episode_indices[n] if episode_indices else None)
        self.policy.reset(env_ids=None if env_ids is None else ids, seeds=seeds)

    def step(self, observations: Mapping[int, Any]) -> dict[int, np.ndarray]:
        """One action per env in ``observations`` (env id -> its current observation)."""
        need = [i for i in observations if self.executors[i].needs_chunk]
        self.last_call = None
        latency: dict[int, float] = {}
        if need:
            rtc = self._rtc_requests(need, latency)
            result, wall_ms = call_policy(self.policy, observations, need, **({} if rtc is None else {"rtc": rtc}))
            for row, i in enumerate(need):
                src = self.sources[i]
                if i not in latency:  # (RTC draws it before the call)
                    latency[i] = 0.0 if src is None else src.next_ms(measured_ms=wall_ms)
                submit(self.executors[i], result.actions[row], latency[i])
                self.num_queries[i] += 1
            self.last_call = {"env_ids": need, "wall_ms": wall_ms, "info": result.info, "latency_ms": latency}
        out = {}
        for i in observations:
            out[i] = self.executors[i].next_action()
            self.records[i] = step_record(self.executors[i], i in latency, latency.get(i, math.nan))
        return out
