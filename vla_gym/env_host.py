"""The env side of the one episode loop: one env, driven by typed messages.

:class:`EnvHost` holds an env (built per task, rebuilt after a crash), answers :class:`Reset` and
:class:`Step` with :class:`ResetDone` / :class:`StepDone` (or :class:`Failed`), composes the
episode's video frames where the env renders and writes the video when the episode ends. The
same object runs inside an env worker process (``num_envs > 1``, behind a pipe) and in this
process (``num_envs = 1``, called directly), so both paths produce the same records, videos and
trajectories by construction. The scheduler that drives it is :class:`vla_gym.parallel.EnvPool`.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from vla_gym.worker_protocol import Building, Failed, FromWorker, Reset, ResetDone, Step, StepDone

log = logging.getLogger("vla_gym.env_host")

INFO_KEYS = ("is_success", "init_state_id", "eef_pos", "actuator_force")
"""The part of an env's ``info`` sent back (all the runner reads; the last two from
:class:`vla_gym.dynamics_probe.DynamicsProbe`, for the trajectory-quality metrics)."""

MakeEnv = Callable[[int, int], Any]
"""``(task_index, scene_seed) -> env``."""


def video_rel(task_name: str, episode_index: int, success: bool) -> str:
    """Where an episode's video goes inside the run directory."""
    return f"videos/{task_name}/ep{episode_index:03d}_{'success' if success else 'failure'}.mp4"


class EnvHost:
    """One env and its current episode, driven by :meth:`handle`.

    Args:
        make: Builds the env of a task (``(task_index, scene_seed) -> env``).
        cameras: The policy's cameras, shown beside the third-person view in videos.
        video_size: Side of each video panel.
        fps: Video frame rate.
        out_dir: Run directory videos are written under; None keeps the finished episode's frames
            in :attr:`last_frames` instead.
        owns_env: Whether the host closes the env (False for an env the caller built and closes).
    """

    def __init__(self, make: MakeEnv, cameras: tuple[str, ...], video_size: int, fps: int,
                 out_dir: str | Path | None, owns_env: bool = True) -> None:
        self.make, self.cameras, self.video_size, self.fps = make, tuple(cameras), int(video_size), int(fps)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.owns_env = owns_env
        self.env: Any = None
        self.env_task: int | None = None
        self.episode: Reset | None = None
        self.instruction = ""
        self.obs: dict[str, Any] = {}
        self.steps = 0
        self.frames: list[np.ndarray] = []
        self.last_frames: list[np.ndarray] = []

    @classmethod
    def from_config(cls, cfg: Any, inputs: Any, out_dir: str | Path | None) -> EnvHost:
        """A host building the config's envs for a policy's inputs (what a worker process runs)."""
        from vla_gym.build import make_env

        def make(task_index: int, scene_seed: int) -> Any:
            return make_env(cfg, task_index, inputs, record_video=bool(cfg.video.enabled), scene_seed=scene_seed)

        return cls(make, tuple(inputs.cameras), int(cfg.video.size), int(cfg.video.fps), out_dir)

    # -- messages
    def handle(self, msg: Reset | Step) -> Iterator[FromWorker]:
        """The replies to one command: a :class:`Building` notice before a slow env build, then the reply.

        Any exception becomes :class:`Failed` and the env is dropped (a crashed simulator is rebuilt).
        """
        try:
            if isinstance(msg, Reset):
                if self.env is None or self.env_task != msg.task_index:
                    yield Building()  # the parent's watchdog allows the build limit for this
                    self._drop_env()
                    self.env = self.make(msg.task_index, msg.scene_seed)
                    self.env_task = msg.task_index
                yield self._reset(msg)
            elif isinstance(msg, Step):
                yield self._step(msg.action)
            else:
                raise ValueError(f"unknown env command {type(msg).__name__}")
        except Exception as e:  # noqa: BLE001 - reported to the scheduler, which records the episode's error
            log.debug("env episode failed:\n%s", traceback.format_exc())
            self.frames.clear()
            self._drop_env()
            yield Failed(f"{type(e).__name__}: {e}", traceback.format_exc())

    def _reset(self, ep: Reset) -> ResetDone:
        self.episode = ep
        self.frames.clear()
        options = {"init_state_id": ep.init_state_id} if ep.init_state_id is not None else None
        self.obs, info = self.env.reset(seed=ep.seed, options=options)
        self.instruction = self.obs["instruction"]
        self.steps = 0
        self._snapshot("t=0")
        done = bool(info.get("is_success", False))
        names = (str(self.env.unwrapped.suite_name), str(self.env.unwrapped.task_name))
        return ResetDone(self.obs, _small_info(info), names, done, self._finish(True) if done else None)

    def _step(self, action: Any) -> StepDone:
        self.obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        success = bool(info.get("is_success", False))
        self._snapshot(f"t={self.steps}" + (" SUCCESS" if success else ""))
        video = self._finish(success) if (terminated or truncated) else None
        return StepDone(self.obs, float(reward), bool(terminated), bool(truncated), _small_info(info), video)

    # -- video
    def _snapshot(self, status: str) -> None:
        if self.episode is not None and self.episode.record_video:
            from vla_gym.video import compose_frame

            panels = [self.obs["images"][c] for c in self.cameras] + [self.env.render()]
            self.frames.append(compose_frame(panels, self.instruction, self.video_size, footer=status))

    def _finish(self, success: bool) -> str | None:
        """End of episode: write the video (or keep the frames); its path inside the run dir."""
        frames, self.frames = self.frames, []
        self.last_frames = frames
        if not frames or self.out_dir is None:
            return None
        from vla_gym.video import write_video

        rel = video_rel(str(self.env.unwrapped.task_name), int(self.episode.episode_index), success)
        write_video(self.out_dir / rel, frames, fps=self.fps)
        return rel

    # -- life cycle
    def _drop_env(self) -> None:
        env, self.env, self.env_task = self.env, None, None
        if env is not None and self.owns_env:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - a broken sim may fail to close too
                pass

    def close(self) -> None:
        """Close the env this host built (an env handed in by the caller stays open)."""
        self._drop_env()


def _small_info(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in INFO_KEYS if k in info}
