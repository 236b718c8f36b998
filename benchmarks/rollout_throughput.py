"""Rollout throughput: episodes/hour, sequential (``num_envs=1``) vs ``num_envs=N``, in one run.

    python benchmarks/rollout_throughput.py [--tasks 0,1] [--episodes 2] [--max-steps 60] [--num-envs 2]
        [--cases a,b] [--rounds 1] [--vla-eval PYTHON] [--ceiling]

Cases, on LIBERO (``libero_spatial``), videos off, same planned episodes for every row:
- (a) the scripted expert, no cameras (physics-bound);
- (b) a camera policy: ``random`` with ``policy.cameras=[agentview,wrist]`` at 256 and the
  reference render quality (render-bound: the CPU renderer).
Each row is a whole ``vla_gym.evaluate`` run (env builds, worker start-up, resets included),
timed by wall clock, with the cores it kept busy (CPU seconds per wall second: a speed-up from N
envs is bounded by how much of the machine N=1 leaves idle); the sequential and parallel runs of a case alternate with each other
over ``--rounds`` so machine load affects both alike, and the table shows the median. The
machine may be shared: ``os.getloadavg()`` is printed before and after.

Side by side with AllenAI vla-eval 0.8.0 (``--vla-eval PYTHON``, the interpreter of a venv where
vla-eval 0.8.0 is installed; docs/benchmarks.md says how to make one): case (b)'s workload is also
run by vla-eval, at 1 and at N shards, each run alternating with vla_gym's run of the same N. A
vla-eval run (``benchmarks/vla_eval/launch.py`` has the exact commands) is timed from the start of
its model server (``benchmarks/vla_eval/random_server.py``: uniform [-1, 1]^7 actions, as vla_gym's
``random``) to its stop, so its start-up and result export count, as vla_gym's do: N = 1 is one
``vla-eval run --no-docker -c benchmarks/vla_eval/libero_spatial_random.yaml``; N > 1 is N such runs
at once with ``--shard-id i --num-shards N`` against the one server, then ``vla-eval export`` (the
pattern of vla-eval's ``scripts/run_sharded.sh``). Both tools: the same (task, init state) pairs
(vla-eval runs the first T tasks, so ``--tasks`` must be 0..T-1; episode e runs init state e in
both), 10 settle steps after each reset, then ``--max-steps`` policy steps, agentview + wrist at
256 rendered with the same ``MUJOCO_GL`` (egl unless set). Every run is checked to have done exactly that (vla_gym's
result, vla-eval's recording) or the benchmark stops. The issue-20 workload (8 episodes x 150 steps):

    python benchmarks/rollout_throughput.py --cases b --tasks 0,1,2,3 --episodes 2 --max-steps 150 \
        --num-envs 2 --rounds 2 --vla-eval /tmp/vevenv/bin/python --ceiling

The machine's ceiling (``--ceiling``, case (b)): in each round the bare env -- no runner, no
workers' pipes, no policy -- is also stepped ``--max-steps`` times alone and ``--max-steps`` times with
N at once, in interleaved phases on the same N processes (``benchmarks/render_ceiling.py``);
``N * ms(alone) / ms(at once)`` is the most any runner's ``num_envs=N`` can gain on this machine for
this workload's steps, printed beside vla_gym's speed-up.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import sys
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
VLA_EVAL_CASE = "b"  # the case vla-eval runs too
VLA_EVAL_VERSION = "0.8.0"  # the version the harness in benchmarks/vla_eval/ was written against
VLA_EVAL_NOTE = ("vla-eval rows skipped: add --vla-eval PYTHON (a venv with vla-eval 0.8.0, see "
                 "docs/benchmarks.md, 'Side by side with vla-eval') to time it on case (b)'s workload")


def load_sibling(name: str, rel: str):
    """A module of ``benchmarks/`` loaded by path (the folder is not a package)."""
    path = Path(__file__).resolve().parent / rel
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that have been waited for (workers, vla-eval)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed_run(policy: str, overrides: tuple, args: argparse.Namespace, num_envs: int, out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = vla_gym.evaluate(policy, env="libero_spatial", tasks=[int(t) for t in args.tasks.split(",")],
                           episodes=args.episodes, output_dir=out, max_steps=args.max_steps,
                           video={"enabled": False}, num_envs=num_envs, overrides=overrides)
    return time.perf_counter() - t0, res


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="0,1")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task")
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cases", default="a,b", help="which cases to run: a, b or a,b")
    parser.add_argument("--vla-eval", metavar="PYTHON", default=None,
                        help="python of a venv with vla-eval 0.8.0: time vla-eval on case (b)'s workload too")
    parser.add_argument("--ceiling", action="store_true",
                        help="also step case (b)'s bare env alone and N at once: the machine's ceiling")
    args = parser.parse_args()
    try:
        tasks = [int(t) for t in args.tasks.split(",")]
    except ValueError:
        parser.error(f"--tasks must be comma-separated task indices, got {args.tasks!r}")
    if args.num_envs < 1 or args.episodes < 1 or args.max_steps < 1 or args.rounds < 1:
        parser.error("--num-envs, --episodes, --max-steps and --rounds must be >= 1")
    args.wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    if args.ceiling and VLA_EVAL_CASE not in args.wanted:
        parser.error(f"--ceiling measures case ({VLA_EVAL_CASE})'s env: add it to --cases")
    if args.ceiling and args.num_envs < 2:
        parser.error("--ceiling compares 1 env with --num-envs at once: --num-envs must be >= 2")
    if args.vla_eval is not None:
        if VLA_EVAL_CASE not in args.wanted:
            parser.error(f"--vla-eval times case ({VLA_EVAL_CASE}): add it to --cases")
        if tasks != list(range(len(tasks))):
            parser.error(f"--vla-eval runs the first T tasks of libero_spatial (its max_tasks): --tasks must be "
                         f"0,1,...,T-1, got {args.tasks}")
    return args


def check_full_length(name: str, res: dict, n_eps: int, max_steps: int) -> None:
    """Stop unless a vla_gym run did ``n_eps`` episodes of exactly ``max_steps`` steps (the compared workload)."""
    o = res["overall"]
    if o["episodes"] != n_eps or o["mean_steps"] != max_steps or o["errors"]:
        raise SystemExit(f"{name}: vla_gym ran {o['episodes']} episodes of {o['mean_steps']} mean steps "
                         f"({o['errors']} errors), the comparison needs {n_eps} x {max_steps}")


def main() -> None:
    args = parse_args()
    launcher = load_sibling("vla_eval_launch", "vla_eval/launch.py") if args.vla_eval is not None else None
    if launcher is None:
        run(args, None)
        return
    try:
        run(args, launcher)
    except launcher.VlaEvalRunError as e:
        raise SystemExit(f"vla-eval: {e}") from None


def run(args: argparse.Namespace, launcher) -> None:
    n_par = args.num_envs
    n_tasks = len(args.tasks.split(","))
    if launcher is not None:
        version = launcher.installed_version(args.vla_eval)
        print(f"vla-eval {version} at {args.vla_eval}"
              + ("" if version == VLA_EVAL_VERSION else f" (the harness was written against {VLA_EVAL_VERSION})"))
    print(f"cpus={os.cpu_count()} loadavg before={tuple(round(x, 2) for x in os.getloadavg())}", flush=True)
    rows = []
    ceiling_mod = load_sibling("render_ceiling", "render_ceiling.py") if args.ceiling else None
    ceilings: list[float] = []  # per round: N * ms(alone) / ms(N at once) of the bare env
    with tempfile.TemporaryDirectory(prefix="vla_gym_tput_") as tmp:
        for name, (policy, options) in CASES.items():
            case = name[1]  # "(a) ..." -> "a"
            if case not in args.wanted:
                continue
            side_by_side = launcher is not None and case == VLA_EVAL_CASE
            walls: dict[int, list[float]] = {1: [], n_par: []}
            ve_walls: dict[int, list[float]] = {1: [], n_par: []}
            cores: dict[int, list[float]] = {1: [], n_par: []}  # CPU seconds per wall second: how much of the machine a run used
            ve_cores: dict[int, list[float]] = {1: [], n_par: []}
            n_eps, steps = 0, 0.0
            for r in range(args.rounds):
                for n in (1, n_par):
                    tools = ("vla_gym", "vla-eval") if side_by_side else ("vla_gym",)
                    if ceiling_mod is not None and case == VLA_EVAL_CASE and n == n_par:
                        tools = (*tools, "bare env")  # measures alone and N at once itself
                    for tool in (tools if r % 2 == 0 else tools[::-1]):  # who goes first alternates
                        out = Path(tmp) / f"{case}_{tool}_{n}_{r}"
                        cpu0 = cpu_seconds()
                        if tool == "vla_gym":
                            wall, res = timed_run(policy, options, args, n, out)
                            walls[n].append(wall)
                            cores[n].append((cpu_seconds() - cpu0) / wall)
                            n_eps, steps = res["overall"]["episodes"], res["overall"]["mean_steps"]
                            assert res["overall"]["errors"] == 0, res["overall"]
                            if side_by_side:
                                check_full_length(name, res, n_tasks * args.episodes, args.max_steps)
                            print(f"  {name} num_envs={n}: {n_eps} episodes in {wall:.1f} s, "
                                  f"{cores[n][-1]:.2f} cores busy (load {os.getloadavg()[0]:.2f})", flush=True)
                        elif tool == "bare env":
                            alone, together = ceiling_mod.step_ms(n, args.max_steps)
                            ceilings.append(n * alone / together)
                            print(f"  (b) bare env: {alone:.0f} ms per step alone, {together:.0f} ms each with {n} "
                                  f"at once, {ceilings[-1]:.2f}x (load {os.getloadavg()[0]:.2f})", flush=True)
                        else:
                            t = launcher.run(args.vla_eval, shards=n, tasks=n_tasks, episodes=args.episodes,
                                             max_steps=args.max_steps, out=out)
                            ve_walls[n].append(t.wall)
                            ve_cores[n].append((cpu_seconds() - cpu0) / t.wall)
                            print(f"  {name} vla-eval shards={n}: {n_tasks * args.episodes} episodes in "
                                  f"{t.wall:.1f} s, {ve_cores[n][-1]:.2f} cores busy, server ready after {t.server_ready:.1f} s "
                                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
            seq, par = statistics.median(walls[1]), statistics.median(walls[n_par])
            rows.append((name, n_eps, steps, 3600 * n_eps / seq, 3600 * n_eps / par, seq / par,
                         statistics.median(cores[1]), statistics.median(cores[n_par])))
            if side_by_side:
                ve_seq, ve_par = statistics.median(ve_walls[1]), statistics.median(ve_walls[n_par])
                rows.append((f"({case}) same workload, vla-eval {VLA_EVAL_VERSION} (N = shards)", n_eps,
                             float(args.max_steps), 3600 * n_eps / ve_seq, 3600 * n_eps / ve_par, ve_seq / ve_par,
                             statistics.median(ve_cores[1]), statistics.median(ve_cores[n_par])))
    print(f"\nlibero_spatial tasks {args.tasks}, {args.episodes} episodes/task, max_steps={args.max_steps}, "
          f"median of {args.rounds} round(s)")
    head = ("case", "episodes", "mean steps", "ep/h N=1", f"ep/h N={n_par}", "speed-up", "cores busy N=1",
            f"cores busy N={n_par}")
    table = [head] + [(n, str(e), f"{s:.0f}", f"{a:.0f}", f"{b:.0f}", f"{x:.2f}x", f"{c1:.2f}", f"{c2:.2f}")
                      for n, e, s, a, b, x, c1, c2 in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("-|-".join("-" * w for w in widths))
    ve = [r for r in rows if "vla-eval" in r[0]]
    gym = next((r for r in rows if r[0].startswith(f"({VLA_EVAL_CASE})") and "vla-eval" not in r[0]), None)
    if ve:
        print("N = num_envs for vla_gym, shards (processes sharing one model server) for vla-eval")
        print(f"lead, vla_gym ep/h / vla-eval ep/h: N=1 {gym[3] / ve[0][3]:.2f}x, "
              f"N={n_par} {gym[4] / ve[0][4]:.2f}x")
    elif VLA_EVAL_CASE in args.wanted:
        print(VLA_EVAL_NOTE)
    if ceilings:
        bound = statistics.median(ceilings)
        print(f"ceiling, case ({VLA_EVAL_CASE})'s bare env with no runner (alone vs {n_par} at once, interleaved): "
              f"{bound:.2f}x for num_envs={n_par}; vla_gym's speed-up {gym[5]:.2f}x is {gym[5] / bound:.0%} of it")
    print(f"cores busy = CPU seconds (this process and its workers or vla-eval's processes) per wall second, "
          f"of {os.cpu_count()}: N=1 already uses more than one core where the renderer's threads (llvmpipe) do")
    print(f"loadavg after={tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
