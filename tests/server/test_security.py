"""API key, healthz, loopback bind, rate limit, batching across clients, stale replies,
reconnects and graceful SIGTERM shutdown. Loopback only; every server is started and stopped here."""

from __future__ import annotations

import http.client
import signal
import threading
import time

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import serve as sync_serve

from tests.server.helpers import RecordingPolicy, server_process, zeros_obs
from vla_gym import wire
from vla_gym.policies.random_policy import RandomPolicy
from vla_gym.policies.remote import RemotePolicy
from vla_gym.serve import PolicyServer, ServerOptions, bind_warning, serve_in_thread

SIZE = 16


def random_policy(**kw) -> RandomPolicy:
    return RandomPolicy(chunk_size=3, cameras=["agentview", "wrist"], image_size=SIZE, **kw)


def healthz(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


def test_api_key_healthz_and_loopback_default():
    assert ServerOptions().host == "127.0.0.1"
    assert bind_warning("127.0.0.1", None) is None and bind_warning("0.0.0.0", "k") is None
    assert "WITHOUT an API key" in bind_warning("0.0.0.0", None)
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    with serve_in_thread(random_policy(), api_key="s3cret") as server:
        assert server.address[0] == "127.0.0.1"
        assert healthz(server.port) == (200, "OK\n")
        for key in (None, "wrong"):
            with pytest.raises(InvalidStatus) as refused:
                WebsocketClientPolicy("127.0.0.1", server.port, api_key=key)
            assert refused.value.response.status_code == 401
        with pytest.raises(PermissionError):
            RemotePolicy(port=server.port, api_key="wrong", connect_timeout_s=5)
        client = WebsocketClientPolicy("127.0.0.1", server.port, api_key="s3cret")
        assert client.get_server_metadata()["server"] == "vla_gym"
        assert client.infer(zeros_obs(SIZE))["actions"].shape == (3, 7)
        remote = RemotePolicy(port=server.port, api_key="s3cret")
        assert remote.act([zeros_obs(SIZE)]).actions.shape == (1, 3, 7)
        remote.close()


def test_rate_limit_per_connection():
    with serve_in_thread(random_policy(), max_requests_per_s=5) as server:
        with connect(f"ws://127.0.0.1:{server.port}", compression=None, proxy=None) as ws:
            ws.recv()
            replies = []
            for _ in range(12):
                ws.send(wire.packb(zeros_obs(SIZE)))
                replies.append(ws.recv(timeout=5))
    limited = [r for r in replies if isinstance(r, str)]
    assert limited and all("rate limit" in r for r in limited)
    assert isinstance(replies[0], bytes)


def test_batching_across_clients_and_lone_client_latency():
    policy = RecordingPolicy(random_policy())
    with serve_in_thread(policy, batch_window_ms=300, max_batch=8) as server:
        lone = RemotePolicy(port=server.port)
        lone.act([zeros_obs(SIZE)])
        t0 = time.perf_counter()
        lone.act([zeros_obs(SIZE)])
        assert time.perf_counter() - t0 < 0.15, "a lone client waited for the batching window"
        lone.close()
        time.sleep(1.1)  # the lone client's connection is gone; nobody else is active

        clients = [RemotePolicy(port=server.port) for _ in range(4)]
        for i, c in enumerate(clients):
            c.reset(env_ids=[0], seeds=[100 + i])
        barrier = threading.Barrier(4)
        results: dict[int, np.ndarray] = {}

        def run(i: int) -> None:
            barrier.wait()
            results[i] = clients[i].act([zeros_obs(SIZE)]).actions[0]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        for c in clients:
            c.close()
    assert max(server.batch_sizes) > 1, server.batch_sizes
    assert max(map(len, policy.calls)) > 1 and all(len(set(c)) == len(c) for c in policy.calls)  # distinct ids
    for i in range(4):  # each row is that client's own env: same as a local policy reset with its seed
        local = random_policy()
        local.reset(env_ids=[0], seeds=[100 + i])
        np.testing.assert_array_equal(results[i], local.act([zeros_obs(SIZE)]).actions[0])


def test_remote_batch_uses_one_connection_per_env():
    with serve_in_thread(random_policy(), batch_window_ms=200) as server:
        remote = RemotePolicy(port=server.port)
        remote.reset(env_ids=[0, 1, 2], seeds=[1, 2, 3])
        for _ in range(2):
            chunk = remote.act([zeros_obs(SIZE)] * 3, env_ids=[0, 1, 2])
        remote.close()
    assert chunk.actions.shape == (3, 3, 7)
    assert server.batch_sizes[-1] == 3
    local = random_policy()
    local.reset(env_ids=[0, 1, 2], seeds=[1, 2, 3])
    local.act([zeros_obs(SIZE)] * 3, env_ids=[0, 1, 2])
    np.testing.assert_array_equal(chunk.actions, local.act([zeros_obs(SIZE)] * 3, env_ids=[0, 1, 2]).actions)
    assert set(chunk.info["timing_ms"]) == {"preprocess", "model", "server", "network", "postprocess"}


class FakeServer:
    """A misbehaving openpi-style server (websockets sync server in a thread), scripted per test."""

    def __init__(self, handler) -> None:
        self.metadata = PolicyServer(random_policy()).metadata(0)
        self.connections = 0
        self._handler = handler
        self.server = sync_serve(self._handle, "127.0.0.1", 0, compression=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, ws) -> None:
        self.connections += 1
        n = self.connections
        ws.send(wire.packb(self.metadata))
        try:
            for frame in ws:
                self._handler(ws, n, wire.unpackb(frame))
        except ConnectionClosed:
            pass

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


def reply(ws, request, value: float, request_id=None) -> None:
    rid = request.get("request_id") if request_id is None else request_id
    ws.send(wire.packb({"actions": np.full((3, 7), value, np.float32), "request_id": rid}))


def test_stale_reply_with_wrong_id_is_dropped():
    fake = FakeServer(lambda ws, n, req: (reply(ws, req, 0.9, request_id=req["request_id"] - 1), reply(ws, req, 0.1)))
    try:
        remote = RemotePolicy(port=fake.port)
        actions = remote.act([zeros_obs(SIZE)]).actions
        assert np.all(actions == np.float32(0.1)) and remote.stale_replies_dropped == 1
        remote.close()
    finally:
        fake.close()


def test_late_reply_after_timeout_is_never_acted_on():
    def handler(ws, n, req):
        if n == 1:  # the first connection answers too late
            time.sleep(0.6)
            try:
                reply(ws, req, 0.9)
            except ConnectionClosed:
                pass
        else:
            reply(ws, req, 0.2)

    fake = FakeServer(handler)
    try:
        remote = RemotePolicy(port=fake.port, recv_timeout_s=0.2)
        with pytest.raises(TimeoutError):
            remote.act([zeros_obs(SIZE)])
        time.sleep(0.6)  # the late reply is sent now (to a closed connection)
        assert np.all(remote.act([zeros_obs(SIZE)]).actions == np.float32(0.2))
        remote.close()
    finally:
        fake.close()


def test_reconnect_after_dropped_connection():
    def handler(ws, n, req):
        reply(ws, req, 0.1 * n)
        ws.close()  # drop every connection after one reply

    fake = FakeServer(handler)
    try:
        remote = RemotePolicy(port=fake.port)
        assert np.all(remote.act([zeros_obs(SIZE)]).actions == np.float32(0.1))
        second = remote.act([zeros_obs(SIZE)]).actions  # from a new connection (2, or 3 if 2 was also dropped)
        assert np.all(second == second.flat[0]) and second.flat[0] in (np.float32(0.2), np.float32(0.3))
        assert remote.reconnects >= 1
        remote.close()
    finally:
        fake.close()


def test_sigterm_finishes_in_flight_request_then_closes_cleanly(tmp_path):
    overrides = ["policy=random", "policy._target_=tests.server.helpers.SlowRandomPolicy", "+policy.delay_s=1.5",
                 "policy.cameras=[agentview,wrist]", f"policy.image_size={SIZE}"]
    with server_process(tmp_path, overrides) as (proc, port):
        assert healthz(port)[0] == 200
        with connect(f"ws://127.0.0.1:{port}", compression=None, proxy=None) as ws:
            ws.recv(timeout=10)
            ws.send(wire.packb(zeros_obs(SIZE)))
            time.sleep(0.5)  # the request is in the policy (1.5 s) now
            proc.send_signal(signal.SIGTERM)
            answer = ws.recv(timeout=10)  # the in-flight request is answered...
            assert isinstance(answer, bytes) and wire.unpackb(answer)["actions"].shape == (1, 7)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1001  # ...then a clean "going away" close
        assert proc.wait(15) == 0


def test_connect_retries_until_the_server_is_up_and_fails_cleanly_without_one():
    import socket

    with socket.socket() as s:  # a free loopback port nobody listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match="no policy server"):
        RemotePolicy(port=port, connect_timeout_s=0.3)
    assert time.perf_counter() - t0 < 5
    made: list[RemotePolicy] = []
    client = threading.Thread(target=lambda: made.append(RemotePolicy(port=port, connect_timeout_s=20)))
    client.start()
    time.sleep(0.5)  # the client is retrying with backoff meanwhile
    with serve_in_thread(random_policy(), port=port):
        client.join(20)
        assert made and made[0].act([zeros_obs(SIZE)]).actions.shape == (1, 3, 7)
        made[0].close()


def test_remote_against_an_openpi_style_server_without_metadata():
    """openpi's serve_policy.py sends {} and reads openpi's LIBERO keys: no request ids, no resets."""
    seen: list[dict] = []

    def handler(ws, n, req):
        seen.append(req)
        ws.send(wire.packb({"actions": np.full((10, 7), 0.5), "policy_timing": {"infer_ms": 1.0},
                            "server_timing": {"infer_ms": 2.0}}))

    fake = FakeServer(handler)
    fake.metadata = {}
    try:
        remote = RemotePolicy(port=fake.port)
        assert remote.input_format == "openpi_libero" and remote.execution.replan_steps == 5
        assert remote.inputs.cameras == ("agentview", "wrist") and remote.inputs.image_size == 256
        remote.reset(env_ids=[0], seeds=[1])  # nothing to send: openpi servers keep no episode state
        obs = zeros_obs(256)
        chunk = remote.act([obs])
        remote.close()
    finally:
        fake.close()
    assert len(seen) == 1 and set(seen[0]) == {"observation/image", "observation/wrist_image", "observation/state",
                                               "prompt"}
    assert seen[0]["observation/image"].shape == (224, 224, 3) and seen[0]["observation/state"].dtype == np.float64
    np.testing.assert_array_equal(seen[0]["observation/image"], wire.resize_with_pad(obs["images"]["agentview"][:, ::-1],
                                                                                       224))
    assert chunk.actions.shape == (1, 10, 7) and chunk.actions.dtype == np.float32
    assert chunk.info["timing_ms"]["model"] == 1.0 and chunk.info["timing_ms"]["server"] == 1.0
