"""The env side of the one loop, driven by typed messages (no process, no pipe): the toy suite's env."""

from __future__ import annotations

import numpy as np

from tests.toy_suite import ToyEnv
from vla_gym.env_host import EnvHost
from vla_gym.worker_protocol import Building, Failed, Reset, ResetDone, Step, StepDone


def _host(tmp_path, built: list) -> EnvHost:
    def make(task_index: int, scene_seed: int) -> ToyEnv:
        built.append(task_index)
        return ToyEnv(task=task_index, image_size=16, render_size=16)

    return EnvHost(make, ("agentview",), video_size=16, fps=10, out_dir=tmp_path)


def test_reset_builds_once_per_task_and_steps_reply_with_typed_messages(tmp_path):
    built: list[int] = []
    host = _host(tmp_path, built)
    first = list(host.handle(Reset(task_index=0, episode_index=0, seed=7, init_state_id=None, record_video=True,
                                   scene_seed=0)))
    assert [type(m) for m in first] == [Building, ResetDone]
    assert first[1].names == ("toy", "reach_3") and first[1].obs["instruction"] == "move right three times"
    replies = [next(iter(host.handle(Step(np.ones(7, np.float32))))) for _ in range(3)]
    assert all(isinstance(r, StepDone) for r in replies) and replies[-1].terminated
    assert replies[-1].info == {"is_success": True} and replies[-1].video == "videos/reach_3/ep000_success.mp4"
    assert (tmp_path / replies[-1].video).exists() and replies[0].video is None
    again = list(host.handle(Reset(task_index=0, episode_index=1, seed=8, init_state_id=None, record_video=False,
                                   scene_seed=0)))
    assert [type(m) for m in again] == [ResetDone] and built == [0]  # same task: the env is reused
    host.close()


def test_a_failing_step_is_a_failed_reply_and_the_env_is_rebuilt(tmp_path):
    built: list[int] = []
    host = _host(tmp_path, built)
    list(host.handle(Reset(task_index=1, episode_index=0, seed=7, init_state_id=None, record_video=False,
                           scene_seed=0)))
    (reply,) = host.handle(Step("not an action"))
    assert isinstance(reply, Failed) and reply.error.startswith(("ValueError", "TypeError", "IndexError"))
    assert host.env is None
    list(host.handle(Reset(task_index=1, episode_index=1, seed=8, init_state_id=None, record_video=False,
                           scene_seed=0)))
    assert built == [1, 1]
