"""Success and trajectory quality vs simulated policy latency, per execution timing (no GPU, no weights).

Usage::

    python benchmarks/realtime_sweep.py                                   # scripted expert on Lift
    python benchmarks/realtime_sweep.py --env vla_gym/libero_object --task 0 --episodes 2 \\
        --timings blocking --latencies 0,100,200,400
    python benchmarks/realtime_sweep.py --policy pi0 --episodes 1     # tiny pi0: chunks of 50, 5 executed

Runs its own small episode loop that follows the per-env executor contract of
:mod:`vla_gym.timing` (query when ``needs_chunk``, ``submit`` the chunk with its latency,
``next_action`` every step) until the runner does the same (issue 21). The policy is the
privileged scripted expert (one action per query, so ``blocking`` means ``d`` holds before each
action and ``async`` one action every ``d`` steps once pipelined), or a tiny randomly initialised
pi0 / pi0.5 (chunked, openpi's 5 of 50; it never succeeds, but its motion shows what the timing
does to a chunked policy). Records the columns
:func:`vla_gym.traj_metrics.episode_metrics` reads, including the true end-effector position
and the arm's actuator forces (:class:`vla_gym.dynamics_probe.DynamicsProbe`), and prints one row per timing x
latency: success rate and the mean of each metric over the episodes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import vla_gym  # noqa: F401 - registers the envs
from vla_gym.dynamics_probe import DynamicsProbe
from vla_gym.execution import ExecutionConfig, LatencyConfig, build_executor, build_latency_source
from vla_gym.policies.scripted import ScriptedPickPlacePolicy
from vla_gym.policy import act_one
from vla_gym.timing import step_record, submit
from vla_gym.traj_metrics import episode_metrics

COLUMNS = ("completion_time_s", "path_length_m", "path_efficiency", "jerk_rms", "action_smoothness",
           "chunk_boundary_jump_mean", "oscillation_per_s", "idle_fraction", "actuator_effort", "hold_steps",
           "stale_skipped", "queries")


def run_episode(env, policy, cfg: ExecutionConfig, seed: int, task_kwargs: dict) -> dict:
    execution = getattr(policy, "execution", None)
    ex = build_executor(cfg, mode=getattr(execution, "mode", "open_loop"),
                        replan_steps=getattr(execution, "replan_steps", 1))
    source = build_latency_source(cfg)
    obs, info = env.reset(seed=seed, options=task_kwargs or None)
    policy.reset(env_ids=[0], seeds=[seed])
    source.reset(seed=seed)
    ex.reset()
    cols: dict[str, list] = {k: [] for k in ("action", "success", "query", "latency_ms", "hold", "chunk_start",
                                              "stale", "eef_pos", "actuator_force")}
    cols["eef_pos"].append(info["eef_pos"])
    done = False
    while not done:
        queried, lat = False, float("nan")
        if ex.needs_chunk:
            t0 = time.perf_counter()
            chunk = act_one(policy, obs)
            lat = source.next_ms(measured_ms=1e3 * (time.perf_counter() - t0))
            submit(ex, chunk, lat)
            queried = True
        action = ex.next_action()
        rec = step_record(ex, queried, lat)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        for k, v in (("action", action), ("success", bool(info.get("is_success", False))), ("query", rec.query),
                     ("latency_ms", rec.latency_ms), ("hold", rec.hold), ("chunk_start", rec.chunk_start),
                     ("stale", rec.stale)):
            cols[k].append(v)
        cols["eef_pos"].append(info["eef_pos"])
        cols["actuator_force"].append(info["actuator_force"])
    traj = {k: np.asarray(v) for k, v in cols.items()}
    m = episode_metrics(traj, dt=1.0 / 20)
    m["success"] = bool(traj["success"].any())
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", default="vla_gym/Lift")
    ap.add_argument("--task", type=int, default=None, help="LIBERO task index")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--timings", default="synchronous,blocking,async")
    ap.add_argument("--latencies", default="0,100,200,400", help="ms, comma-separated")
    ap.add_argument("--policy", default="scripted", choices=("scripted", "pi0", "pi05"),
                    help="pi0/pi05: a tiny randomly initialised checkpoint (no weights needed, never succeeds)")
    ap.add_argument("--scratch", default="/tmp/vla_gym_realtime", help="where tiny checkpoints are written")
    args = ap.parse_args()
    if args.policy == "scripted":
        policy = ScriptedPickPlacePolicy()
        kwargs = {"cameras": (), "privileged": True}
    else:
        import families  # benchmarks/families.py

        ckpt, extra = families.tiny_checkpoint(args.policy, Path(args.scratch))
        policy = families.load(args.policy, ckpt, "none", **extra)
        kwargs = {"cameras": policy.inputs.cameras, "image_size": policy.inputs.image_size}
    if args.task is not None:
        kwargs["task"] = args.task
    env = DynamicsProbe(gym.make(args.env, **kwargs))
    print(f"policy {args.policy}, chunk execution {getattr(policy, 'execution', None)}, env {args.env}\n")
    print("| timing | latency ms | success | " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * (3 + len(COLUMNS)))
    try:
        for timing in args.timings.split(","):
            # synchronous ignores latency: one reference row
            for ms in [0.0] if timing == "synchronous" else [float(x) for x in args.latencies.split(",")]:
                cfg = ExecutionConfig(timing=timing, latency=LatencyConfig(source="fixed", ms=ms))
                rows = [run_episode(env, policy, cfg, seed, {}) for seed in range(args.episodes)]
                cells = [f"{np.mean([r['success'] for r in rows]):.2f}"]
                for c in COLUMNS:
                    vals = [r[c] for r in rows if r[c] is not None]
                    cells.append(f"{np.mean(vals):.3g}" if vals else "-")
                print(f"| {timing} | {ms:g} | " + " | ".join(cells) + " |", flush=True)
    finally:
        env.close()


if __name__ == "__main__":
    main()
