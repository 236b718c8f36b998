"""The machine's ceiling for N envs: the bare env stepping alone vs N of them stepping at once.

    python benchmarks/render_ceiling.py [--processes 2] [--steps 150] [--chunk 25] [--rounds 1] [--task 0]

Why: a runner's ``num_envs=N`` speed-up can be no larger than what N independent envs gain on the
same machine with no runner at all -- no scheduler, no pipes, no policy, no results. This measures
that bound for the render-bound workload of ``rollout_throughput.py`` case (b): vla_gym's LIBERO
env (``libero_spatial``, agentview + wrist at 256, reference pixels) stepped with uniform random
actions in [-1, 1]^7, as the ``random`` policy sends.

N processes each build, reset and warm up one env, then, in alternating phases of ``--chunk``
steps, one of them steps alone (the others wait, costing nothing) or all N step at once, until each
phase has seen ``--steps`` steps. The phases interleave, on the same envs, because this VM's speed
drifts by tens of percent within minutes: two separate timed runs would compare two machines.
Printed: ms per step alone and together, and the ceiling ``N * ms(alone) / ms(together)`` (env
steps per second at N over at 1). On a CPU renderer one process already keeps more than one core
busy (llvmpipe rasterises on a thread per core), which is what lowers this ceiling below N.
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


def _stepper(conn, index: int, task: int) -> None:
    """One env in its own process: steps ``k`` random actions per request and replies with the seconds taken."""
    import numpy as np

    from vla_gym.envs.libero import LiberoEnv

    env = LiberoEnv(suite="libero_spatial", task=task, cameras=CAMERAS, image_size=IMAGE_SIZE)
    try:
        env.reset(seed=index, options={"init_state_id": index})
        rng = np.random.default_rng(index)
        for _ in range(WARMUP_STEPS):
            env.step(rng.uniform(-1.0, 1.0, 7))
        conn.send("ready")
        while (k := conn.recv()) is not None:
            t0 = time.perf_counter()
            for _ in range(k):
                env.step(rng.uniform(-1.0, 1.0, 7))
            conn.send(time.perf_counter() - t0)
    finally:
        env.close()


def step_ms(processes: int, steps: int, chunk: int = 25, task: int = 0) -> tuple[float, float]:
    """``(ms per step alone, ms per step with all `processes` stepping at once)``, phases interleaved."""
    ctx = mp.get_context("spawn")
    pipes = [ctx.Pipe() for _ in range(processes)]
    procs = [ctx.Process(target=_stepper, args=(child, i, task), daemon=True) for i, (_, child) in enumerate(pipes)]
    conns = [parent for parent, _ in pipes]
    for p in procs:
        p.start()
    alone: list[float] = []
    together: list[float] = []
    try:
        for c in conns:
            if not c.poll(600) or c.recv() != "ready":
                raise RuntimeError("a bare-env process did not start")
        for phase in range(2 * -(-steps // chunk)):
            if phase % 2 == (phase // 2) % 2:  # alone, together, together, alone, alone, ...: each goes first equally
                c = conns[(phase // 2) % processes]  # whose turn it is to step alone
                c.send(chunk)
                alone.append(c.recv() / chunk)
            else:
                for c in conns:
                    c.send(chunk)
                together.extend(c.recv() / chunk for c in conns)
    except EOFError:
        raise RuntimeError(f"a bare-env process died (exit codes {[p.exitcode for p in procs]})") from None
    finally:
        for c in conns:
            try:
                c.send(None)
            except OSError:
                pass
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return 1e3 * statistics.median(alone), 1e3 * statistics.median(together)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150, help="steps timed alone, and at once, per round")
    parser.add_argument("--chunk", type=int, default=25, help="steps per phase")
    parser.add_argument("--rounds", type=int, default=1, help="fresh processes and envs per round")
    parser.add_argument("--task", type=int, default=0)
    args = parser.parse_args()
    if args.processes < 2 or min(args.steps, args.chunk, args.rounds) < 1:
        parser.error("--processes must be >= 2, --steps, --chunk and --rounds >= 1")
    print(f"cpus={os.cpu_count()} loadavg before={tuple(round(x, 2) for x in os.getloadavg())}", flush=True)
    bounds = []
    for _ in range(args.rounds):
        alone, together = step_ms(args.processes, args.steps, args.chunk, args.task)
        bounds.append(args.processes * alone / together)
        print(f"  alone {alone:.0f} ms/step, {args.processes} at once {together:.0f} ms/step each: "
              f"{bounds[-1]:.2f}x", flush=True)
    print(f"bare env, libero_spatial task {args.task}, {'+'.join(CAMERAS)} @ {IMAGE_SIZE}: ceiling for "
          f"num_envs={args.processes}: {statistics.median(bounds):.2f}x (median of {args.rounds} round(s))")
    print(f"loadavg after={tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
