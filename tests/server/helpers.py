"""Test-only policies and a subprocess server launcher for tests/server (loopback, ephemeral ports)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from vla_gym.policies.random_policy import RandomPolicy
from vla_gym.policy import ActionChunk, Observation, Policy, PolicyInputs

ROOT = Path(__file__).resolve().parents[2]


class SlowRandomPolicy(RandomPolicy):
    """RandomPolicy whose ``act`` sleeps ``delay_s`` first (in-flight requests during shutdown)."""

    def __init__(self, delay_s: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delay_s = delay_s

    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None) -> ActionChunk:
        time.sleep(self.delay_s)
        return super().act(observations, env_ids)


class RecordingPolicy(Policy):
    """Wraps a policy; records each ``act`` call's env ids, raises on the instruction ``boom`` and
    sleeps ``SLOW_S`` on the instruction ``slow`` (keeps the policy busy while a test queues a batch)."""

    SLOW_S = 1.0

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.inputs = inner.inputs
        self.execution = inner.execution
        self.stateless_act = getattr(inner, "stateless_act", False)
        self.calls: list[list[int]] = []
        self.resets: list[list[int] | None] = []
        self.lock = threading.Lock()

    def reset(self, env_ids=None, seeds=None) -> None:
        with self.lock:
            self.resets.append(None if env_ids is None else list(env_ids))
        self.inner.reset(env_ids=env_ids, seeds=seeds)

    def act(self, observations, env_ids=None) -> ActionChunk:
        if any(o.get("instruction") == "slow" for o in observations):
            time.sleep(self.SLOW_S)
        if any(o.get("instruction") == "boom" for o in observations):
            raise RuntimeError("boom requested")
        with self.lock:
            self.calls.append(list(range(len(observations))) if env_ids is None else list(env_ids))
        return self.inner.act(observations, env_ids)

    def info(self):
        return self.inner.info()


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@contextmanager
def server_process(tmp_path: Path, overrides: Sequence[str], timeout_s: float = 60) -> Iterator[tuple[subprocess.Popen, int]]:
    """``python -m vla_gym.serve <overrides> port=0`` in a child process; yields (process, port).

    Stopped with SIGTERM (then SIGKILL after 10 s) when the block ends.
    """
    port_file = tmp_path / f"port_{time.monotonic_ns()}"
    log = open(tmp_path / f"{port_file.name}.log", "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "vla_gym.serve", *overrides, "port=0", f"port_file={port_file}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = tmp_path / f"{port_file.name}.log"  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + timeout_s
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(f"server did not start:\n{(tmp_path / (port_file.name + '.log')).read_text()}")
            time.sleep(0.05)
        yield proc, int(port_file.read_text())
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def zeros_obs(size: int, cameras: Sequence[str] = ("agentview", "wrist"), instruction: str = "pick it up") -> dict:
    """A valid vla_gym-format request for a policy reading ``cameras`` at ``size``."""
    rng = np.random.default_rng(0)
    return {"images": {c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in cameras},
            "instruction": instruction, "state": np.linspace(-1, 1, 8).astype(np.float32)}


class EchoStatePolicy(Policy):
    """Stateless test policy: every action is ``tanh(state[:7])``, ``chunk_size`` times (declares ``stateless_act``)."""

    stateless_act = True

    def __init__(self, chunk_size: int = 3, size: int = 16) -> None:
        self.chunk_size = chunk_size
        self.inputs = PolicyInputs(cameras=("agentview", "wrist"), image_size=size, uses_state=True)

    def act(self, observations, env_ids=None) -> ActionChunk:
        rows = [np.tile(np.tanh(o["state"][:7]), (self.chunk_size, 1)) for o in observations]
        return ActionChunk(np.stack(rows).astype(np.float32))


def connect_from(port: int, source_ip: str = "127.0.0.1", **kwargs):
    """A websockets sync client to the loopback server whose socket is bound to ``source_ip``
    (another 127.0.0.0/8 address is another peer for the per-peer cap; Linux routes all of it to lo)."""
    import socket

    from websockets.sync.client import connect

    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source_ip, 0))
    return connect(f"ws://127.0.0.1:{port}", sock=sock, compression=None, proxy=None, **kwargs)
