"""Run AllenAI vla-eval 0.8.0 on LIBERO without docker, timed by wall clock, and check what it ran.

Why it exists: ``benchmarks/rollout_throughput.py --vla-eval PYTHON`` puts vla-eval's episodes/hour
beside vla_gym's. One timed run, from ``t0`` to the end, is what vla-eval's docs prescribe for a
(sharded) run without docker, all with ``PYTHON`` (the interpreter of a venv with vla-eval 0.8.0):

1. the model server: ``PYTHON benchmarks/vla_eval/random_server.py --host 127.0.0.1 --port P``
   (what ``vla-eval serve`` runs through ``uv run``), until ``GET /health`` answers;
2. shards = 1: ``vla-eval run -c benchmarks/vla_eval/libero_spatial_random.yaml --no-docker
   --server-url ws://127.0.0.1:P --output-dir OUT --eval-id ID --benchmark-field max_tasks=T
   --benchmark-field episodes_per_task=E --benchmark-field max_steps=S`` (it exports its results
   itself); shards = N > 1: N of those at once with ``--shard-id i --num-shards N`` against the
   one server (they share the SQLite recording and take episodes from its queue), then
   ``vla-eval export OUT/recording-ID.sqlite`` -- the pattern of vla-eval's ``scripts/run_sharded.sh``;
3. the server is stopped.

Then the recording is read back (stdlib ``sqlite3``): exactly one finished, non-errored episode per
(task, init state) asked for, each ``max_steps`` steps long with ``max_steps`` recorded step rows,
or :class:`VlaEvalRunError`. The server itself rejects any observation that lacks the agentview and
wrist images at 256x256. Stdlib only: it runs under vla_gym's interpreter and drives the other one.

Standalone: ``python benchmarks/vla_eval/launch.py PYTHON [--shards 2] [--tasks 4] [--episodes 2]
[--max-steps 150]`` prints the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
SERVER = HERE / "random_server.py"
CONFIG = HERE / "libero_spatial_random.yaml"
BENCHMARK_NAME = "libero_spatial"  # the config's ``name:``; vla-eval's per-benchmark eval id is ID-NAME
SERVER_START_TIMEOUT_S = 180.0
VLA_EVAL = ("-m", "vla_eval.cli.main")


class VlaEvalRunError(RuntimeError):
    """vla-eval failed, or did not run the episodes it was asked for."""


class Timing(NamedTuple):
    """Wall times of one run, in seconds."""

    wall: float  # server start to server stop, everything included
    server_ready: float  # server start to its first healthy ``/health``


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 25) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-n:])


def _wait_healthy(server: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise VlaEvalRunError(f"vla-eval model server exited with {server.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise VlaEvalRunError(f"vla-eval model server not healthy after {SERVER_START_TIMEOUT_S:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def vla_eval_env(out: Path) -> dict[str, str]:
    """The environment of every vla-eval process: vla_gym's renderer (EGL unless set), a LIBERO config dir."""
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", env["MUJOCO_GL"] if env["MUJOCO_GL"] in ("egl", "osmesa") else "egl")
    if "LIBERO_CONFIG_PATH" not in env:
        (out / "libero_config").mkdir(parents=True, exist_ok=True)
        env["LIBERO_CONFIG_PATH"] = str(out / "libero_config")
    return env


def run(python: str, *, shards: int, tasks: int, episodes: int, max_steps: int, out: Path) -> Timing:
    """One timed vla-eval run of ``tasks`` x ``episodes`` episodes on ``shards`` shards.

    Tasks are libero_spatial's first ``tasks`` (vla-eval's ``max_tasks``); episode e of a task runs
    its init state e. Raises :class:`VlaEvalRunError` unless the recording shows exactly that.
    """
    if shards < 1 or tasks < 1 or episodes < 1 or max_steps < 1:
        raise ValueError(f"shards, tasks, episodes and max_steps must be >= 1, got {shards, tasks, episodes, max_steps}")
    out.mkdir(parents=True, exist_ok=True)
    env = vla_eval_env(out)
    eval_id = f"vla_gym_side_by_side_{os.getpid()}_{time.time_ns()}"
    port = _free_port()
    run_cmd = [python, *VLA_EVAL, "run", "-c", str(CONFIG), "--no-docker",
               "--server-url", f"ws://127.0.0.1:{port}", "--output-dir", str(out), "--eval-id", eval_id,
               "--benchmark-field", f"max_tasks={tasks}", "--benchmark-field", f"episodes_per_task={episodes}",
               "--benchmark-field", f"max_steps={max_steps}"]
    server_log = out / "server.log"
    procs: list[tuple[subprocess.Popen, Path]] = []
    t0 = time.perf_counter()
    with server_log.open("w") as slog:
        server = subprocess.Popen([python, str(SERVER), "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=slog, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(server, port, server_log)
        ready = time.perf_counter() - t0
        for i in range(shards):
            log = out / f"shard{i}.log"
            shard = [] if shards == 1 else ["--shard-id", str(i), "--num-shards", str(shards)]
            with log.open("w") as f:
                procs.append((subprocess.Popen(run_cmd + shard, env=env, stdout=f, stderr=subprocess.STDOUT), log))
        for proc, log in procs:
            if proc.wait() != 0:
                raise VlaEvalRunError(f"vla-eval run exited with {proc.returncode}:\n{_tail(log)}")
        db = out / f"recording-{eval_id}.sqlite"
        if shards > 1:
            log = out / "export.log"
            with log.open("w") as f:
                rc = subprocess.run([python, *VLA_EVAL, "export", str(db)], env=env, stdout=f,
                                    stderr=subprocess.STDOUT).returncode
            if rc != 0:
                raise VlaEvalRunError(f"vla-eval export exited with {rc}:\n{_tail(log)}")
    finally:
        for proc, _ in procs:  # only still running when another one failed
            _stop(proc)
        _stop(server)
    wall = time.perf_counter() - t0
    check_recording(db, eval_id, tasks=tasks, episodes=episodes, max_steps=max_steps)
    return Timing(wall, ready)


def installed_version(python: str) -> str:
    """vla-eval's version in the venv of ``python``, or :class:`VlaEvalRunError` if it has none."""
    try:
        res = subprocess.run([python, "-c", "import vla_eval; print(vla_eval.__version__)"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VlaEvalRunError(f"cannot run {python}: {e}") from None
    if res.returncode != 0:
        raise VlaEvalRunError(f"{python} cannot import vla_eval: {res.stderr.strip().splitlines()[-1:]}")
    return res.stdout.strip()


def check_recording(db: Path, eval_id: str, *, tasks: int, episodes: int, max_steps: int) -> None:
    """Fail unless ``db`` holds one full-length, non-errored episode per (task, init state) asked for."""
    if not db.is_file():
        raise VlaEvalRunError(f"no vla-eval recording at {db}")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT eid, status, steps, context, failure_reason FROM episode_results "
                           "WHERE eval_id = ?", (f"{eval_id}-{BENCHMARK_NAME}",)).fetchall()
        step_rows = dict(con.execute("SELECT eid, COUNT(*) FROM step_rows GROUP BY eid").fetchall())
    finally:
        con.close()
    want = {(t, e) for t in range(tasks) for e in range(episodes)}
    seen: list[tuple[int, int]] = []
    for eid, status, steps, context, reason in rows:
        ctx = json.loads(context)
        key = (int(ctx["task_id"]), int(ctx["episode_idx"]))
        seen.append(key)
        if status == "error":
            raise VlaEvalRunError(f"vla-eval episode task {key[0]} init state {key[1]} errored: {reason}")
        if steps != max_steps or step_rows.get(eid, 0) != max_steps:
            raise VlaEvalRunError(f"vla-eval episode task {key[0]} init state {key[1]}: {steps} steps "
                                  f"({step_rows.get(eid, 0)} recorded), expected {max_steps}")
    if sorted(seen) != sorted(want):
        raise VlaEvalRunError(f"vla-eval ran (task, init state) {sorted(seen)}, expected {sorted(want)}")


def main() -> None:
    """Time one run and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("python", help="python interpreter of a venv with vla-eval 0.8.0")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=4, help="the first T libero_spatial tasks")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task (init states 0..E-1)")
    parser.add_argument("--max-steps", type=int, default=150)
    args = parser.parse_args()
    n = args.tasks * args.episodes
    with tempfile.TemporaryDirectory(prefix="vla_eval_run_") as tmp:
        t = run(args.python, shards=args.shards, tasks=args.tasks, episodes=args.episodes,
                   max_steps=args.max_steps, out=Path(tmp))
    print(f"vla-eval shards={args.shards}: {n} episodes x {args.max_steps} steps in {t.wall:.1f} s "
          f"= {3600 * n / t.wall:.0f} ep/h (model server ready after {t.server_ready:.1f} s)")


if __name__ == "__main__":
    main()
