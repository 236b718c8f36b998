"""Env steps/s: raw LIBERO ``OffScreenRenderEnv`` vs the vla_gym env, side by side in one run.

    python benchmarks/env_speed.py [--steps 40] [--rounds 3] [--suite libero_spatial --task 0]

Configurations (each stepped with the same small random actions from the same init state):
- raw: LIBERO's own env as the reference evals build it (agentview + wrist at 256, robosuite
  renders every camera inside ``step``), an episode start being ``reset``, ``set_init_state``
  and the 10 no-op settle steps, as in the evals;
- vla (a): vla_gym with the same two cameras at 256;
- vla (b): vla_gym with one 224 camera, as OpenVLA consumes;
- vla (c): (b) with ``render_quality="fast"`` (no MSAA, no reflections: different pixels,
  the mean absolute pixel difference to (b) is printed too).
Rounds alternate between configurations so machine load affects all alike; the table shows the
median steps/s and the median episode-start time (reset + settle) per configuration, each with
its ratio to raw.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import vla_gym  # noqa: E402,F401


def make_raw(suite: str, task: int, size: int):
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    with contextlib.redirect_stdout(io.StringIO()):
        s = benchmark.get_benchmark_dict()[suite]()
    t = s.get_task(task)
    env = OffScreenRenderEnv(bddl_file_name=os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file),
                             camera_heights=size, camera_widths=size)
    init = s.get_task_init_states(task)[0]

    def reset():
        env.reset()
        env.set_init_state(init)
        for _ in range(10):  # the evals' settle steps, each rendering both cameras
            env.step([0.0] * 6 + [-1.0])

    return env, reset, lambda a: env.step(a)


def make_vla(suite: str, task: int, cameras: tuple[str, ...], size: int, quality: str = "reference"):
    env = gym.make(f"vla_gym/{suite}", task=task, cameras=cameras, image_size=size, max_episode_steps=10_000,
                   render_quality=quality)
    return env, lambda: env.reset(seed=0, options={"init_state_id": 0}), lambda a: env.step(a)


def time_episode(reset, step, actions: np.ndarray) -> tuple[float, float]:
    """(steps/s, seconds for the episode start) of one reset and ``len(actions)`` steps."""
    t0 = time.perf_counter()
    reset()
    t1 = time.perf_counter()
    for a in actions:
        step(a)
    return len(actions) / (time.perf_counter() - t1), t1 - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    actions = np.random.default_rng(0).uniform(-0.3, 0.3, (args.steps, 7))
    configs = {
        "raw LIBERO (agentview+wrist @256)": make_raw(args.suite, args.task, 256),
        "vla_gym (a) agentview+wrist @256": make_vla(args.suite, args.task, ("agentview", "wrist"), 256),
        "vla_gym (b) agentview @224": make_vla(args.suite, args.task, ("agentview",), 224),
        "vla_gym (c) agentview @224, fast render": make_vla(args.suite, args.task, ("agentview",), 224, "fast"),
    }
    rates: dict[str, list[float]] = {name: [] for name in configs}
    starts: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, (_, reset, step) in configs.items():
            rate, start_s = time_episode(reset, step, actions)
            rates[name].append(rate)
            starts[name].append(start_s)
    raw_name = "raw LIBERO (agentview+wrist @256)"
    raw, raw_start = statistics.median(rates[raw_name]), statistics.median(starts[raw_name])
    print(f"{args.suite} task {args.task}: {args.steps} steps x {args.rounds} rounds (medians)")
    for name in configs:
        med, start = statistics.median(rates[name]), statistics.median(starts[name])
        print(f"  {name:42s} {med:6.2f} steps/s  {med / raw:5.2f}x raw   "
              f"episode start {start:5.2f} s  {raw_start / start:5.2f}x faster than raw")
    ref_env, fast_env = configs["vla_gym (b) agentview @224"][0], configs["vla_gym (c) agentview @224, fast render"][0]
    a = ref_env.reset(seed=0, options={"init_state_id": 0})[0]["images"]["agentview"].astype(int)
    b = fast_env.reset(seed=0, options={"init_state_id": 0})[0]["images"]["agentview"].astype(int)
    d = np.abs(a - b)
    print(f"  fast vs reference pixels: mean |d| {d.mean():.2f}, p99 {np.percentile(d, 99):.0f}, "
          f"{100 * (d > 8).mean():.1f} % of values differ by > 8 levels")
    for env, _, _ in configs.values():
        env.close()


if __name__ == "__main__":
    main()
