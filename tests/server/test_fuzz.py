"""Fuzz: >= 1,000 malformed messages from several clients against a server in a child process.

Each message is answered with an error text frame, or the server closes that connection (the
client then reconnects). The server never crashes, its RSS stays within RSS_BOUND_MIB of the
warmed-up baseline, and it answers a valid request correctly afterwards.
"""

from __future__ import annotations

import threading

import msgpack
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.server.helpers import rss_mib, server_process, zeros_obs
from vla_gym import wire

N_CLIENTS = 4
PER_CLIENT = 260  # 1,040 malformed messages in all
RSS_BOUND_MIB = 64
SIZE = 32
MAX_MESSAGE = 2**20


def _arr(dtype="|u1", shape=(SIZE, SIZE, 3), data=None) -> dict:
    n = int(np.prod(shape)) if data is None else 0
    return {b"__ndarray__": True, b"data": bytes(n * np.dtype(dtype.replace("|S", "|u1")).itemsize)
            if data is None else data, b"dtype": dtype, b"shape": list(shape)}


def malformed(rng: np.random.Generator, k: int) -> bytes | str:
    """The k-th malformed message (cycling through the kinds below, randomised)."""
    valid = wire.packb(zeros_obs(SIZE))
    img = {"agentview": _arr(), "wrist": _arr()}
    kinds = [
        lambda: rng.bytes(int(rng.integers(0, 300))),                                     # random bytes
        lambda: valid[: int(rng.integers(1, len(valid) - 1))],                            # truncated msgpack
        lambda: msgpack.packb([[1, 2, 3], -1, 3.5, "obs", None, True][int(rng.integers(0, 6))]),  # not a map
        lambda: msgpack.packb({"images": [1, 2], "instruction": 5}),                      # wrong value types
        lambda: wire.packb({**zeros_obs(SIZE + 1)}),                                      # wrong image shape
        lambda: wire.packb({**zeros_obs(SIZE), "state": np.zeros(int(rng.integers(0, 7)), np.float32)}),
        lambda: msgpack.packb({"images": {"agentview": _arr(shape=[2**31, 2**31, 3], data=b"x"), "wrist": _arr()},
                               "instruction": "x"}),                                      # huge declared shape
        lambda: msgpack.packb({"images": {"agentview": _arr(shape=[-1, SIZE, 3], data=b"")}, "instruction": "x"}),
        lambda: msgpack.packb({"images": {"agentview": _arr(dtype=str(rng.choice(
            ["|O", "|V8", "<c16", "<U4", ">f4", "abc", "|S10"])), data=b"\0" * 16, shape=[16]), "wrist": _arr()},
            "instruction": "x"}),                                                         # bad dtypes
        lambda: msgpack.packb({"images": {"agentview": _arr(dtype=1234, data=b"", shape=[0])}, "instruction": "x"}),
        lambda: msgpack.packb({b"__npgeneric__": True, b"data": 2**30, b"dtype": "|S"}),  # openpi's 1 GiB scalar
        lambda: msgpack.packb({"instruction": {b"__npgeneric__": True, b"data": "x" * 100, b"dtype": "<U100"},
                               "images": img}),
        lambda: msgpack.packb({"instruction": {b"__npgeneric__": True, b"data": 2**64 - 1, b"dtype": "<i8"}}),
        lambda: msgpack.packb({"images": {"agentview": _arr(data=b"\0" * 7), "wrist": _arr()}, "instruction": "x"}),
        lambda: b"\x91" * int(rng.integers(10, 5000)) + b"\xc0",                          # deep list nesting
        lambda: b"\x81\xa1a" * int(rng.integers(10, 3000)) + b"\xc0",                     # deep map nesting
        lambda: "".join(map(chr, rng.integers(32, 1000, int(rng.integers(0, 200))))),     # text frames
        lambda: msgpack.packb({"images": img, "instruction": "x", "extra": b"\0" * 100}),  # unknown key
        lambda: msgpack.packb({"images": img, "instruction": "x", b"raw": 1}),            # bin user key
        lambda: msgpack.packb({"images": img, "instruction": msgpack.ExtType(5, b"xyz")}),  # ext type
        lambda: wire.packb({**zeros_obs(SIZE), "state": np.full(8, np.nan, np.float32)}),  # non-finite state
        lambda: wire.packb({**zeros_obs(SIZE), "instruction": "y" * 10_000}),            # overlong string
        lambda: msgpack.packb({"reset": "yes", "seed": -5}),                              # bad reset
        lambda: wire.packb({**zeros_obs(SIZE), "request_id": "abc"}),                     # bad request id
        lambda: b"\xdd\xff\xff\xff\xff",                                                  # array32 of 4G entries
        lambda: b"\xc6\x7f\xff\xff\xff" + b"x" * 10,                                      # bin32 of 2 GiB, truncated
        lambda: bytes(MAX_MESSAGE + 10),                                                  # over max_size -> 1009
    ]
    return kinds[k % len(kinds)]()


def _client(port: int, seed: int, counts: dict, errors: list) -> None:
    rng = np.random.default_rng(seed)
    ws = None
    try:
        for k in range(PER_CLIENT):
            if ws is None:
                ws = connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None, proxy=None)
                ws.recv(timeout=10)  # metadata
            msg = malformed(rng, k + seed)
            try:
                ws.send(msg)
                reply = ws.recv(timeout=10)
            except ConnectionClosed:
                counts["closed"] += 1
                ws = None
                continue
            if not isinstance(reply, str):
                errors.append(f"message kind {(k + seed) % 27} got a binary (non-error) reply")
            counts["errors"] += 1
    except Exception as e:  # noqa: BLE001 - reported by the test
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        if ws is not None:
            ws.close()


def test_fuzz_1000_malformed_messages(tmp_path):
    overrides = ["policy=random", "policy.cameras=[agentview,wrist]", f"policy.image_size={SIZE}",
                 "policy.chunk_size=4", "max_requests_per_s=100000", f"limits.max_message_bytes={MAX_MESSAGE}",
                 "max_errors_per_connection=20"]
    with server_process(tmp_path, overrides) as (proc, port):
        valid = zeros_obs(SIZE)

        def valid_roundtrip() -> np.ndarray:
            with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None, proxy=None) as ws:
                ws.recv(timeout=10)
                ws.send(wire.packb(valid))
                reply = ws.recv(timeout=10)
                assert isinstance(reply, bytes), reply
                return wire.unpackb(reply)["actions"]

        assert valid_roundtrip().shape == (4, 7)
        baseline = rss_mib(proc.pid)
        counts = {"errors": 0, "closed": 0}
        errors: list[str] = []
        threads = [threading.Thread(target=_client, args=(port, 1000 * i, counts, errors)) for i in range(N_CLIENTS)]
        for t in threads:
            t.start()
        peak = baseline
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_mib(proc.pid))
            for t in threads:
                t.join(0.05)
        assert not errors, errors[:5]
        assert counts["errors"] + counts["closed"] == N_CLIENTS * PER_CLIENT >= 1000
        assert counts["closed"] > 0 and counts["errors"] > 800, counts
        assert proc.poll() is None, "the server died"
        log = proc.log_path.read_text()
        assert "Traceback" not in log and "handler failed" not in log, log[-3000:]
        assert peak - baseline < RSS_BOUND_MIB, f"RSS grew {peak - baseline:.0f} MiB (baseline {baseline:.0f})"
        actions = valid_roundtrip()  # still answers correctly: a fresh env (reset on connect) -> same row
        assert actions.shape == (4, 7) and np.all(np.abs(actions) <= 1)
