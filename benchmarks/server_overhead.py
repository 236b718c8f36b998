"""Policy-server overhead on loopback: remote vs in-process ``act``, and batching across clients.

Usage::

    python benchmarks/server_overhead.py                  # ~1 minute
    python benchmarks/server_overhead.py --requests 1000 --cost-ms 20

1. Per-request overhead: one observation of two 224x224 uint8 images + 8-D state, served by
   ``python -m vla_gym.serve`` in a child process (vla_gym input format), sent by
   ``policy=remote``; versus the same policy's ``act`` in-process. The policy itself costs
   ~0 ms (random actions), so the difference is serialisation + websocket + server work
   (decoding, validation, batcher, thread hop).
2. Throughput of 4 concurrent clients (threads, one connection each) against a policy whose
   ``act`` costs ``--cost-ms`` per call whatever the batch size (the shape of a GPU forward
   pass at small batch), with batching off (``max_batch=1``) and on (``max_batch=8``, 2 ms
   window).

Both are printed side by side in one table. The machine is shared, so medians are reported
with the p95 and the minimum (the contention-free estimate), and the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from vla_gym.policies.random_policy import RandomPolicy
from vla_gym.policy import ActionChunk, Observation, PolicyInputs

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224


class FixedCostPolicy(RandomPolicy):
    """Random actions after sleeping ``cost_ms`` per call (any batch size); reads 2 cameras + state."""

    def __init__(self, cost_ms: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cost_ms = cost_ms
        self.inputs = PolicyInputs(cameras=tuple(self.inputs.cameras), image_size=self.inputs.image_size,
                                   uses_state=True)

    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None) -> ActionChunk:
        if self.cost_ms:
            time.sleep(self.cost_ms / 1e3)
        return super().act(observations, env_ids)


def request_obs() -> Observation:
    rng = np.random.default_rng(0)
    return {"images": {c: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
            "instruction": "put the black bowl on the plate", "state": rng.normal(size=8).astype(np.float32)}


@contextmanager
def server(overrides: list[str]) -> Iterator[int]:
    """``python -m vla_gym.serve`` in a child process on an ephemeral port."""
    tmp = Path(tempfile.mkdtemp(prefix="vla_gym_bench_"))
    port_file = tmp / "port"
    cmd = [sys.executable, "-m", "vla_gym.serve", "policy=random",
           "policy._target_=benchmarks.server_overhead.FixedCostPolicy", "policy.chunk_size=8",
           "policy.cameras=[agentview,wrist]", f"policy.image_size={SIZE}", "port=0", f"port_file={port_file}",
           "max_requests_per_s=100000", *overrides]
    with open(tmp / "log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "log").read_text())
            time.sleep(0.05)
        yield int(port_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def latencies(fn, n: int) -> np.ndarray:
    for _ in range(min(20, n)):
        fn()
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return 1e3 * out


def throughput(port: int, clients: int, seconds: float) -> tuple[float, float]:
    """(requests/s over all clients, mean batch size seen by the server) for ``clients`` threads."""
    from vla_gym.policies.remote import RemotePolicy

    remotes = [RemotePolicy(port=port) for _ in range(clients)]
    obs = request_obs()
    for r in remotes:
        r.act([obs])
    counts = [0] * clients
    batches: list[list[int]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(clients)

    def run(i: int) -> None:
        barrier.wait()
        while time.perf_counter() < stop:
            chunk = remotes[i].act([obs])
            counts[i] += 1
            batches[i].append(int(chunk.info["server_timing"][0]["batch_size"]))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for r in remotes:
        r.close()
    return sum(counts) / wall, float(np.mean([b for bs in batches for b in bs]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per latency measurement")
    parser.add_argument("--cost-ms", type=float, default=10.0, help="policy cost per act call (throughput)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    from vla_gym.policies.remote import RemotePolicy

    obs = request_obs()
    local = FixedCostPolicy(chunk_size=8, cameras=["agentview", "wrist"], image_size=SIZE)
    in_process = latencies(lambda: local.act([obs]), args.requests)
    with server(["batch_window_ms=2"]) as port:
        remote = RemotePolicy(port=port)
        remote_ms = latencies(lambda: remote.act([obs]), args.requests)
        stages = remote.act([obs]).info["timing_ms"]
        remote.close()
    with server([f"+policy.cost_ms={args.cost_ms}", "max_batch=1"]) as port:
        off = throughput(port, args.clients, args.seconds)
    with server([f"+policy.cost_ms={args.cost_ms}", "max_batch=8", "batch_window_ms=2"]) as port:
        on = throughput(port, args.clients, args.seconds)

    def stat(a: np.ndarray) -> str:
        return f"{np.median(a):.2f} (p95 {np.percentile(a, 95):.2f}, min {a.min():.2f})"

    overhead = np.median(remote_ms) - np.median(in_process)
    rows = [
        ("act, 2x224x224 uint8 + state, ms: median (p95, min)", stat(in_process), stat(remote_ms), f"+{overhead:.2f}"),
        (f"{args.clients} clients, policy {args.cost_ms:g} ms/call: req/s (mean batch)",
         f"batching off: {off[0]:.0f} ({off[1]:.1f})", f"batching on: {on[0]:.0f} ({on[1]:.1f})",
         f"x{on[0] / off[0]:.2f}"),
    ]
    head = ("measurement", "in-process / off", "remote / on", "overhead / gain")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    print("remote stage split of one request (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(f"overhead target <= 2 ms median: {'met' if overhead <= 2 else 'NOT met'} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
