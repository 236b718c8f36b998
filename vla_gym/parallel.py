"""The one episode loop: ``num_envs`` envs fed from the episode queue, one batched policy call per step.

The policy stays in the parent; each env is an :class:`~vla_gym.env_host.EnvHost` (rebuilt
when the task changes) that runs whole episodes on typed commands
(:mod:`vla_gym.worker_protocol`): ``Reset`` an episode, ``Step`` an action, and at the
episode's end write its video. With ``num_envs > 1`` each host lives in a worker process behind
a pipe; with ``num_envs = 1`` (:meth:`EnvPool.in_process`) the one host is called directly, so
the in-process and the worker paths are the same loop. The parent (:class:`EnvPool`) keeps the planned
episodes in a queue and hands the next one to a worker the moment its episode ends, so no
worker waits for a slower one to finish its episode and no auto-reset episode is wasted.

Each step the parent calls the policy **once** for all envs that need a new chunk, through
:class:`~vla_gym.chunking.ChunkedActor` (env id = worker slot). Envs that still have queued
actions get them at once; the policy call waits only for envs that are mid-step (never for
one that is resetting or building its simulator). With open-loop chunks the envs therefore
fall into step with each other after their first chunk and are served in one batch.
``batch_wait_ms`` bounds that wait: policies without weights (scripted, random, replay) declare 0,
since for them a shared call saves nothing and waiting makes every env as slow as the slowest.

Process hygiene (STYLE.md, LeRobot / vla-eval): workers start with ``spawn`` (or
``forkserver``), never ``fork``, so neither robosuite's EGL state nor the run directory's
flock is inherited; the simulator and its EGL context are built lazily inside the worker.
``MUJOCO_EGL_DEVICE_ID`` can be set per worker (``worker_egl_devices``).

Failures cost one episode: an exception inside the worker is sent back and the episode is
recorded with ``error`` (the worker drops its env and goes on); a worker that dies (segfault,
``os._exit``) or makes no progress for ``worker_timeout_s`` is killed if needed, its episode
recorded with the reason, and a fresh worker takes its slot.

Results do not depend on ``num_envs``: a worker's episode depends only on the episode (task,
seed, init state, scene) -- LIBERO's reference scene seeding is order-independent -- and the
policy row of env ``i`` only on env ``i``'s observations and seed.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Callable

import numpy as np

from vla_gym.env_host import EnvHost
from vla_gym.timing import DEFAULT_CONTROL_PERIOD_MS, StepRecord, step_record
from vla_gym.worker_protocol import Building, Close, Failed, Reset, ResetDone, Step, StepDone

log = logging.getLogger("vla_gym.parallel")

START_METHODS = ("spawn", "forkserver")
BUILD_TIMEOUT_S = 600.0
"""Watchdog limit while a worker starts (spawn + imports) or builds an env: on a loaded machine
that takes tens of seconds, so ``worker_timeout_s`` (meant for steps and resets) does not apply."""


# ---------------------------------------------------------------------------- worker side
def worker_main(conn, cfg_container: dict[str, Any], inputs: Any, out_dir: str, egl_device: int | None) -> None:
    """Body of one env worker process: an :class:`~vla_gym.env_host.EnvHost` behind a pipe.

    Commands (:mod:`vla_gym.worker_protocol`) arrive one at a time; every reply the host gives is
    sent back; :class:`Close` (or a closed pipe) ends the process.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes the workers
    if egl_device is not None:
        os.environ["MUJOCO_EGL_DEVICE_ID"] = str(egl_device)
    from omegaconf import OmegaConf

    host = EnvHost.from_config(OmegaConf.create(cfg_container), inputs, out_dir)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if isinstance(msg, Close):
            break
        try:
            for reply in host.handle(msg):
                conn.send(reply)
        except (OSError, EOFError):
            break
    host.close()
    conn.close()


# ---------------------------------------------------------------------------- parent side
@dataclass
class EpisodeRun:
    """An episode in flight in one slot, with what the parent measures of it."""

    episode: Any
    t0: float = field(default_factory=time.perf_counter)
    instruction: str = ""
    names: tuple[str, str] | None = None
    steps: int = 0
    sum_reward: float = 0.0
    success: bool = False
    init_state_id: int | None = None
    latencies: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    video: str | None = None
    trajectory: Any = None
    """The per-step record (always kept: the metrics read it); written out only with ``keep_trajectory``."""
    keep_trajectory: bool = False
    dt: float = DEFAULT_CONTROL_PERIOD_MS / 1e3
    last_action: tuple[np.ndarray, StepRecord] | None = None

    def result(self) -> dict[str, Any]:
        """The episode's outcome dict, as :func:`vla_gym.rollout.run_episode` returns it."""
        from vla_gym.traj_metrics import episode_metrics

        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        metrics = episode_metrics(self.trajectory.arrays(), self.dt) if self.trajectory is not None else {}
        return dict(metrics=metrics,
            instruction=self.instruction, success=self.success, steps=self.steps, sum_reward=self.sum_reward,
            latency_ms_mean=float(lat.mean()), latency_ms_p95=float(np.percentile(lat, 95)),
            policy_queries=len(self.latencies), init_state_id=self.init_state_id,
            policy_timing_ms={stage: float(np.mean(v)) for stage, v in self.stage_ms.items()},
        )


class _Worker:
    """An env worker process and the pipe to it."""

    local = False

    def __init__(self, ctx, slot: int, cfg_container: dict, inputs: Any, out_dir: str,
                 egl_device: int | None) -> None:
        self.slot = slot
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=worker_main, args=(child, cfg_container, inputs, out_dir, egl_device),
                                name=f"vla_gym-env-{slot}", daemon=True)
        self.proc.start()
        child.close()
        self.pending: str | None = None  # "reset" | "step": the command awaiting its reply
        self.since = time.monotonic()  # when the pending command was sent (or the worker last reported)
        self.task: int | None = None  # the task of the env this worker holds (or is building)
        self.building = True  # starting (spawn + imports) or building an env: the long watchdog limit applies

    def send(self, msg: Reset | Step) -> None:
        self.conn.send(msg)
        self.pending = "reset" if isinstance(msg, Reset) else "step"
        self.since = time.monotonic()

    def recv(self) -> Any:
        return self.conn.recv()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()

    def close(self) -> None:
        try:
            if self.proc.is_alive() and self.pending is None:
                self.conn.send(Close())
                self.proc.join(timeout=10)
        except (OSError, EOFError):
            pass
        self.kill()


class _LocalSlot:
    """An :class:`EnvHost` in this process (``num_envs = 1``): replies are ready as soon as a command is sent."""

    local = True
    proc = None

    def __init__(self, host: EnvHost) -> None:
        self.host = host
        self.replies: deque = deque()
        self.pending: str | None = None
        self.since = time.monotonic()
        self.task: int | None = None
        self.building = False

    def send(self, msg: Reset | Step) -> None:
        self.pending = "reset" if isinstance(msg, Reset) else "step"
        self.since = time.monotonic()
        self.replies.extend(self.host.handle(msg))

    def recv(self) -> Any:
        return self.replies.popleft()

    def kill(self) -> None:
        self.host.close()

    close = kill


Finished = Callable[..., None]
"""``on_done(episode, result, error, video, (suite, task) or None, wall_s, trajectory)``."""


class EnvPool:
    """``num_envs`` env worker processes and the parent's episode scheduler.

    Args:
        cfg: The resolved rollout config (plain data; sent to each worker).
        inputs: The policy's :class:`~vla_gym.policy.PolicyInputs` (the env is built to match).
        out_dir: The run directory (workers write videos under it).
        num_envs: Worker processes.
        start_method: ``spawn`` or ``forkserver``.
        timeout_s: Kill and replace a worker whose pending command got no reply for this long (None: never).
        egl_devices: ``MUJOCO_EGL_DEVICE_ID`` of worker slot ``i`` is ``egl_devices[i % len]``.
        batch_wait_s: How long an env that needs a chunk waits for envs still mid-step, to share one
            policy call (None: until they reply -- lockstep batching, what a GPU model wants; 0: never,
            what a cheap policy wants: waiting only makes each env as slow as the slowest).
        hosts: Env hosts to drive in this process instead of worker processes (``num_envs = 1``:
            :meth:`in_process`); ``cfg`` and the process options are then unused.
    """

    def __init__(self, cfg: dict[str, Any], inputs: Any, out_dir: str | os.PathLike, num_envs: int, *,
                 start_method: str = "spawn", timeout_s: float | None = None,
                 egl_devices: list[int] | None = None, batch_wait_s: float | None = None,
                 hosts: list[EnvHost] | None = None) -> None:
        self.hosts = hosts
        if hosts is not None:
            num_envs = len(hosts)
        if start_method not in START_METHODS:
            raise ValueError(f"worker_start_method must be one of {START_METHODS} (never fork), got {start_method!r}")
        self.ctx = mp.get_context(start_method)
        self.cfg, self.inputs, self.out_dir = cfg, inputs, str(out_dir)
        self.num_envs = int(num_envs)
        self.timeout_s = timeout_s
        self.batch_wait_s = batch_wait_s
        self.egl_devices = list(egl_devices) if egl_devices else None
        self.workers: list[_Worker | None] = [None] * self.num_envs
        self.restarts = 0

    @classmethod
    def in_process(cls, host: EnvHost, batch_wait_s: float | None = None) -> EnvPool:
        """One env, in this process: the same loop as the workers', without a pipe."""
        return cls({}, None, "", 1, hosts=[host], batch_wait_s=batch_wait_s)

    def _start(self, slot: int) -> _Worker | _LocalSlot:
        if self.hosts is not None:
            w: Any = _LocalSlot(self.hosts[slot])
            self.workers[slot] = w
            return w
        egl = self.egl_devices[slot % len(self.egl_devices)] if self.egl_devices else None
        w = _Worker(self.ctx, slot, self.cfg, self.inputs, self.out_dir, egl)
        self.workers[slot] = w
        return w

    def _replace(self, slot: int) -> None:
        w = self.workers[slot]
        if w is not None:
            w.kill()
        self.workers[slot] = None  # started again when it gets its next episode
        self.restarts += 1

    def close(self) -> None:
        """Stop every worker process (the pool is unusable afterwards)."""
        for w in self.workers:
            if w is not None:
                w.close()
        self.workers = [None] * self.num_envs

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the episode loop
    def run(self, episodes: list[Any], actor: Any, scene_seed: int, on_done: Finished, *,
            trajectories: bool = False) -> None:
        """Run ``episodes`` (:class:`~vla_gym.plan.PlannedEpisode`) through the pool, calling ``on_done`` for each.

        With ``trajectories``, each episode's :class:`~vla_gym.trajectory.Trajectory` is filled here,
        from the observations received and the actions sent.
        """
        from vla_gym.trajectory import Trajectory

        queue = deque(episodes)
        runs: dict[int, EpisodeRun] = {}
        need: dict[int, dict[str, Any]] = {}  # slot -> observation awaiting a chunk
        need_since = 0.0  # when the oldest entry of ``need`` arrived

        def done(slot: int, error: str | None = None) -> None:
            run = runs.pop(slot)
            need.pop(slot, None)
            # an errored episode is recorded as the in-process runner records it: no partial measurements
            res = run.result() if error is None else {"instruction": run.instruction}
            on_done(run.episode, res, error, run.video if error is None else None, run.names,
                    time.perf_counter() - run.t0, run.trajectory if run.keep_trajectory else None)

        def act(slots_obs: dict[int, dict[str, Any]]) -> None:
            try:
                actions = actor.step(slots_obs)
            except Exception as e:  # noqa: BLE001 - a failing policy call fails the episodes it served
                log.error("policy call for envs %s failed:\n%s", list(slots_obs), traceback.format_exc())
                for slot in list(slots_obs):
                    done(slot, f"{type(e).__name__}: {e}")
                return
            call = actor.last_call
            records = getattr(actor, "records", None)  # TimedActor: each env's StepRecord of this step
            for slot, action in actions.items():
                queried = call is not None and slot in call["env_ids"]
                rec = records[slot] if records is not None else step_record(
                    actor.executors[slot], queried, 0.0 if queried else float("nan"))
                runs[slot].last_action = (action, rec)
                if queried:
                    runs[slot].latencies.append(call["wall_ms"])
                    for stage, ms in call["info"].get("timing_ms", {}).items():
                        runs[slot].stage_ms.setdefault(str(stage), []).append(float(ms))
                try:
                    self.workers[slot].send(Step(action))
                except (OSError, EOFError, BrokenPipeError):
                    self._died(slot, runs, done)

        while True:
            for slot in range(self.num_envs):  # idle slots take the next episode at once
                if slot in runs or not queue:
                    continue
                ep = self._next_episode(slot, queue)
                w = self.workers[slot] or self._start(slot)
                w.task = ep.task_index
                period = getattr(actor.executors[slot], "control_period_ms", DEFAULT_CONTROL_PERIOD_MS)
                runs[slot] = EpisodeRun(ep, trajectory=Trajectory(), keep_trajectory=trajectories, dt=period / 1e3)
                try:  # the env's own clock and latency source restart with its episode
                    actor.reset(env_ids=[slot], seeds=[ep.seed], tasks=[getattr(ep, "task", None)],
                                episode_indices=[ep.episode_index])
                except Exception as e:  # noqa: BLE001 - e.g. a latency trace without this episode: its error
                    log.error("episode %d of task %d could not start:\n%s", ep.episode_index, ep.task_index,
                              traceback.format_exc())
                    done(slot, f"{type(e).__name__}: {e}")
                    continue
                try:
                    w.send(Reset(task_index=ep.task_index, episode_index=ep.episode_index, seed=ep.seed,
                                 init_state_id=ep.init_state_id, record_video=ep.record_video,
                                 scene_seed=scene_seed))
                except (OSError, EOFError, BrokenPipeError):
                    self._died(slot, runs, done)
            if not runs:
                if queue:  # every slot's episode failed to start: take the next ones
                    continue
                return
            stepping = [s for s in runs if self.workers[s] is not None and self.workers[s].pending == "step"]
            overdue = self.batch_wait_s is not None and need and time.monotonic() >= need_since + self.batch_wait_s
            if need and (not stepping or overdue):  # one policy call for all who need a chunk now
                batch = dict(need)
                need.clear()
                act(batch)
                continue
            busy = [s for s in runs if self.workers[s] is not None and self.workers[s].pending]
            ready = [s for s in busy if self.workers[s].local and self.workers[s].replies]
            if not ready:  # replies of worker processes: wait on their pipes
                waiting = {self.workers[s].conn: s for s in busy if not self.workers[s].local}
                if not waiting:
                    continue
                timeout = self._wait_timeout()
                if need and self.batch_wait_s is not None:
                    left = max(0.0, need_since + self.batch_wait_s - time.monotonic())
                    timeout = left if timeout is None else min(timeout, left)
                ready = [waiting[conn] for conn in wait(list(waiting), timeout=timeout)]
            for slot in ready:
                w = self.workers[slot]
                try:
                    msg = w.recv()
                except (EOFError, OSError):
                    self._died(slot, runs, done)
                    continue
                if isinstance(msg, Building):  # progress notice, not a reply
                    w.building, w.since = True, time.monotonic()
                    continue
                w.pending, w.building = None, False
                run = runs[slot]
                if isinstance(msg, Failed):
                    log.error("episode %d of task %d failed in env worker %d:\n%s", run.episode.episode_index,
                              run.episode.task_index, slot, msg.traceback)
                    done(slot, msg.error)
                    continue
                obs, info, run.video = msg.obs, msg.info, msg.video
                if isinstance(msg, ResetDone):
                    run.names, finished = msg.names, msg.done
                    run.instruction = obs["instruction"]
                    if run.trajectory is not None:
                        run.trajectory.observe(obs, info)
                elif isinstance(msg, StepDone):
                    run.steps += 1
                    run.sum_reward += msg.reward
                    finished = msg.terminated or msg.truncated
                    if run.trajectory is not None:
                        action, rec = run.last_action
                        run.trajectory.step(action, rec.query, msg.reward, bool(info.get("is_success", False)), obs,
                                            info, rec)
                else:
                    raise TypeError(f"env worker {slot} sent an unknown message {type(msg).__name__}")
                run.success = bool(info.get("is_success", False))
                run.init_state_id = info.get("init_state_id", run.episode.init_state_id)
                if finished:
                    done(slot)
                elif actor.executors[slot].needs_chunk:
                    if not need:
                        need_since = time.monotonic()
                    need[slot] = obs
                else:
                    act({slot: obs})  # queued action: no policy call, no waiting
            self._watchdog(runs, done)

    def _next_episode(self, slot: int, queue: deque) -> Any:
        """The queued episode for ``slot``: one of the task its env already has, else of a task no
        other worker has (each task's env is built by as few workers as possible), else the first.
        Only the order changes, never an episode's outcome."""
        w = self.workers[slot]
        mine = w.task if w is not None else None
        others = {o.task for o in self.workers if o is not None and o is not w}
        pick = next((e for e in queue if e.task_index == mine), None)
        if pick is None:
            pick = next((e for e in queue if e.task_index not in others), queue[0])
        queue.remove(pick)
        return pick

    def _wait_timeout(self) -> float | None:
        return None if self.timeout_s is None else max(0.05, min(1.0, self.timeout_s / 4))

    def _died(self, slot: int, runs: dict[int, EpisodeRun], done: Callable[..., None]) -> None:
        w = self.workers[slot]
        w.proc.join(timeout=5)
        code = w.proc.exitcode
        log.error("env worker %d died (exit code %s); restarting it", slot, code)
        self._replace(slot)
        if slot in runs:
            done(slot, f"WorkerDied: env worker process exited with code {code} during the episode")

    def _watchdog(self, runs: dict[int, EpisodeRun], done: Callable[..., None]) -> None:
        if self.timeout_s is None:
            return
        now = time.monotonic()
        for slot in list(runs):
            w = self.workers[slot]
            if w is None or w.local:  # an env in this process cannot be killed and replaced
                continue
            limit = max(self.timeout_s, BUILD_TIMEOUT_S) if w.building else self.timeout_s
            if w.pending and now - w.since > limit:
                log.error("env worker %d made no progress for %.1f s (%s); killing it", slot, now - w.since, w.pending)
                what = "start/env build" if w.building else w.pending
                self._replace(slot)
                done(slot, f"WorkerStalled: no reply to {what} for {limit:g} s (worker_timeout_s); "
                           "worker killed and replaced")
