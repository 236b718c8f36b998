"""The machine's ceiling for N envs: the bare env stepped in 1 process vs in N processes at once.

    python benchmarks/render_ceiling.py [--processes 2] [--steps 60] [--rounds 2] [--task 0]

Why: a runner's ``num_envs=N`` speed-up can be no larger than what N independent envs gain on the
same machine with no runner at all -- no scheduler, no pipes, no policy, no results. This measures
that bound for the render-bound workload of ``rollout_throughput.py`` case (b): vla_gym's LIBERO
env (``libero_spatial``, agentview + wrist at 256, reference pixels) stepped with uniform random
actions in [-1, 1]^7. Each process builds and resets its env, steps a few warm-up steps, waits at a
barrier so all N step at the same time, then times ``--steps`` steps. Printed: ms per step at 1 and
at N processes and the ceiling, ``N * ms(1) / ms(N)`` (env steps per second at N over at 1). On a
CPU renderer one process already keeps more than one core busy (llvmpipe rasterises on a thread
per core), which is what lowers this ceiling below N.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

CAMERAS = ("agentview", "wrist")
IMAGE_SIZE = 256
WARMUP_STEPS = 5


def _step_worker(barrier, results, index: int, task: int, steps: int) -> None:
    import numpy as np

    from vla_gym.envs.libero import LiberoEnv

    env = LiberoEnv(suite="libero_spatial", task=task, cameras=CAMERAS, image_size=IMAGE_SIZE)
    try:
        env.reset(seed=index, options={"init_state_id": index})
        rng = np.random.default_rng(index)
        for _ in range(WARMUP_STEPS):
            env.step(rng.uniform(-1.0, 1.0, 7))
        barrier.wait()  # all processes step at once
        t0 = time.perf_counter()
        for _ in range(steps):
            env.step(rng.uniform(-1.0, 1.0, 7))
        results.put((index, 1e3 * (time.perf_counter() - t0) / steps))
    finally:
        env.close()


def step_ms(processes: int, steps: int, task: int = 0) -> float:
    """Median ms per env step while ``processes`` bare envs step at the same time (one per process)."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_step_worker, args=(barrier, results, i, task, steps)) for i in range(processes)]
    for p in procs:
        p.start()
    try:
        times = [results.get(timeout=600)[1] for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"a bare-env process exited with {bad}")
    return statistics.median(times)


def ceiling(processes: int, steps: int, rounds: int = 1, task: int = 0) -> tuple[float, float, float]:
    """``(ms per step at 1, ms per step at N, N * ms1 / msN)``, medians over alternating rounds."""
    one, many = [], []
    for r in range(rounds):
        for n in ((1, processes) if r % 2 == 0 else (processes, 1)):
            (one if n == 1 else many).append(step_ms(n, steps, task))
    ms1, msn = statistics.median(one), statistics.median(many)
    return ms1, msn, processes * ms1 / msn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--task", type=int, default=0)
    args = parser.parse_args()
    if args.processes < 2 or args.steps < 1 or args.rounds < 1:
        parser.error("--processes must be >= 2, --steps and --rounds >= 1")
    print(f"cpus={os.cpu_count()} loadavg before={tuple(round(x, 2) for x in os.getloadavg())}", flush=True)
    ms1, msn, bound = ceiling(args.processes, args.steps, args.rounds, args.task)
    print(f"bare env, libero_spatial task {args.task}, {'+'.join(CAMERAS)} @ {IMAGE_SIZE}, {args.steps} steps, "
          f"median of {args.rounds} round(s):")
    print(f"  1 process: {ms1:.0f} ms/step; {args.processes} processes at once: {msn:.0f} ms/step each")
    print(f"  ceiling for num_envs={args.processes}: {bound:.2f}x")
    print(f"loadavg after={tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
