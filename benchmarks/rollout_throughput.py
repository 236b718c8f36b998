"""Rollout throughput: episodes/hour, sequential (``num_envs=1``) vs ``num_envs=N``, in one run.

    python benchmarks/rollout_throughput.py [--tasks 0,1] [--episodes 2] [--max-steps 60] [--num-envs 2] [--cases a,b]

Cases, on LIBERO (``libero_spatial``), videos off, same planned episodes for every row:
- (a) the scripted expert, no cameras (physics-bound);
- (b) a camera policy: ``random`` with ``policy.cameras=[agentview,wrist]`` at 256 and the
  reference render quality (render-bound: the CPU renderer).
Each row is a whole ``vla_gym.evaluate`` run (env builds, worker start-up, resets included),
timed by wall clock; the sequential and parallel runs of a case alternate with each other
over ``--rounds`` so machine load affects both alike, and the table shows the median. The
machine may be shared: ``os.getloadavg()`` is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import vla_gym  # noqa: E402

CASES = {
    "(a) scripted, no cameras": ("scripted", ()),
    "(b) random, agentview+wrist @256": ("random", ("policy.cameras=[agentview,wrist]", "policy.image_size=256")),
}


def timed_run(policy: str, overrides: tuple, args: argparse.Namespace, num_envs: int, out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = vla_gym.evaluate(policy, env="libero_spatial", tasks=[int(t) for t in args.tasks.split(",")],
                           episodes=args.episodes, output_dir=out, max_steps=args.max_steps,
                           video={"enabled": False}, num_envs=num_envs, overrides=overrides)
    return time.perf_counter() - t0, res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="0,1")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task")
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cases", default="a,b", help="which cases to run: a, b or a,b")
    args = parser.parse_args()
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    print(f"cpus={os.cpu_count()} loadavg before={tuple(round(x, 2) for x in os.getloadavg())}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vla_gym_tput_") as tmp:
        for name, (policy, options) in CASES.items():
            if name[1] not in wanted:  # "(a) ..." -> "a"
                continue
            walls: dict[int, list[float]] = {1: [], args.num_envs: []}
            n_eps, steps = 0, 0.0
            for r in range(args.rounds):
                for n in (1, args.num_envs):
                    wall, res = timed_run(policy, options, args, n, Path(tmp) / f"{policy}_{n}_{r}")
                    walls[n].append(wall)
                    n_eps, steps = res["overall"]["episodes"], res["overall"]["mean_steps"]
                    assert res["overall"]["errors"] == 0, res["overall"]
                    print(f"  {name} num_envs={n}: {n_eps} episodes in {wall:.1f} s "
                          f"(load {os.getloadavg()[0]:.2f})", flush=True)
            seq, par = statistics.median(walls[1]), statistics.median(walls[args.num_envs])
            rows.append((name, n_eps, steps, 3600 * n_eps / seq, 3600 * n_eps / par, seq / par))
    print(f"\nlibero_spatial tasks {args.tasks}, {args.episodes} episodes/task, max_steps={args.max_steps}, "
          f"median of {args.rounds} round(s)")
    head = ("case", "episodes", "mean steps", "ep/h num_envs=1", f"ep/h num_envs={args.num_envs}", "speed-up")
    table = [head] + [(n, str(e), f"{s:.0f}", f"{a:.0f}", f"{b:.0f}", f"{x:.2f}x") for n, e, s, a, b, x in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("-|-".join("-" * w for w in widths))
    print(f"loadavg after={tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
