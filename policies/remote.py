"""A policy served elsewhere, over openpi's websocket protocol (``policy=remote``).

Talks to ``python -m vla_gym.serve`` or to openpi's own ``scripts/serve_policy.py``: connect
(retrying with exponential backoff up to ``connect_timeout_s``; a refused API key fails at
once), read the metadata frame, then one binary msgpack request per observation and env.

- A vla_gym server's metadata sets :attr:`inputs` (cameras, image size, state) and
  :attr:`execution` (chunk execution defaults) on the instance, so the runner builds the env
  the served policy needs; for a server that announces nothing (openpi sends ``{}``) they come
  from the constructor arguments (openpi's LIBERO defaults: agentview + wrist, 256, state,
  5 of each chunk).
- Each env id gets its own connection (the server keeps per-env policy state per connection);
  a batch of B observations is sent on B connections before any reply is read, so the server
  answers them with one batched ``act``.
- Never acting on a stale reply: requests to a vla_gym server carry a ``request_id`` and any
  reply with another id is dropped; after a receive timeout the connection is closed (so a late
  reply can never be read) and the next call reconnects. A connection dropped by the server is
  re-established and the request sent once more. Policy state on the server does not survive a
  reconnect (the new connection starts a fresh episode for that env).
- A ``"Retryable error ..."`` reply (a request batched with ours made the server's policy fail;
  ours was not answered, the connection stays open) is retried once on the same connection; a
  second one, or any other error text, raises ``RuntimeError`` quoting the server's error id.
- ``ActionChunk.info``: ``timing_ms`` (``preprocess`` = encoding, ``model`` = the served
  policy's ``act``, ``server`` = the rest of the server's time (decode, validation, batching
  window), ``network`` = round trip minus server time, ``postprocess`` = decoding), plus the
  raw ``server_timing`` / ``policy_timing`` of each row.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from vla_gym import wire
from vla_gym.policy import (
    ActionChunk,
    ChunkExecution,
    Observation,
    Policy,
    PolicyInfo,
    PolicyInputs,
    reset_targets,
    resolve_env_ids,
)

log = logging.getLogger("vla_gym.policies.remote")

CLIENT_LIMITS = wire.Limits(max_message_bytes=64 * 2**20, max_array_elements=2**24, max_total_elements=2**25,
                            max_depth=16, max_str_len=2**20, max_container_len=2**16)
"""What the client accepts from a server (generous: it chose to trust that server, but never pickle)."""


class RetryableServerError(RuntimeError):
    """The server did not answer this request because another client's request failed the batch."""


@dataclass
class _Connection:
    ws: Any
    metadata: dict[str, Any]
    ids: Any = field(default_factory=lambda: itertools.count(1))


class RemotePolicy(Policy):
    """A :class:`~vla_gym.policy.Policy` whose ``act`` runs on an openpi-compatible server.

    Args:
        host: Server host, or a full ``ws://`` / ``wss://`` URI.
        port: Server port (None when ``host`` is a URI that has one).
        api_key: Sent as ``Authorization: Api-Key <key>`` (openpi's header).
        connect_timeout_s: Keep retrying a connection this long (backoff 0.05 s doubling to 2 s).
        recv_timeout_s: Longest wait for one reply; then the connection is dropped and
            ``TimeoutError`` raised.
        input_format: ``vla_gym`` or ``openpi_libero``; None = what the server announces
            (``openpi_libero`` for servers without metadata).
        cameras, image_size, uses_state, replan_steps, action_dim: Used only when the server
            announces no metadata (openpi's own server).
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = 8000, api_key: str | None = None, *,
                 connect_timeout_s: float = 30.0, recv_timeout_s: float = 60.0, input_format: str | None = None,
                 cameras: Sequence[str] = ("agentview", "wrist"), image_size: int = 256, uses_state: bool = True,
                 replan_steps: int | None = 5, action_dim: int = 7) -> None:
        self.uri = host if host.startswith("ws") else f"ws://{host}"
        if port is not None and not host.startswith("ws"):
            self.uri += f":{int(port)}"
        self.api_key = api_key
        self.connect_timeout_s = float(connect_timeout_s)
        self.recv_timeout_s = float(recv_timeout_s)
        self.stale_replies_dropped = 0
        self.reconnects = 0
        self.retries = 0
        """Requests sent once more after a retryable server error."""
        self._conns: dict[int, _Connection] = {}
        first = self._connect()
        self._conns[0] = first
        meta = first.metadata
        self.metadata = meta
        self.vla_gym_server = meta.get("server") == "vla_gym"
        if self.vla_gym_server:
            i = meta["inputs"]
            self.inputs = PolicyInputs(cameras=tuple(i["cameras"]), image_size=int(i["image_size"]),
                                       uses_state=bool(i["uses_state"]), uses_privileged=bool(i["uses_privileged"]))
            e = meta["execution"]
            self.execution = ChunkExecution(mode=e["mode"], replan_steps=e["replan_steps"])
            self.reference_scene_seed = meta.get("reference_scene_seed")
            self.action_dim = int(meta["action_dim"])
            announced = meta["input_format"]
            self.openpi_image_size = int(meta.get("openpi_image_size", 224))
        else:
            self.inputs = PolicyInputs(cameras=tuple(cameras), image_size=int(image_size), uses_state=bool(uses_state))
            self.execution = ChunkExecution(mode="open_loop", replan_steps=replan_steps)
            self.action_dim = int(action_dim)
            announced = "openpi_libero"
            self.openpi_image_size = 224
        self.input_format = input_format or announced
        if self.vla_gym_server and self.input_format != announced:
            raise ValueError(f"the server at {self.uri} reads input_format={announced}, not {self.input_format}")
        wire.input_format(self.input_format).check_policy(self.inputs)
        self.features = set(meta.get("features", ())) if self.vla_gym_server else set()

    # ------------------------------------------------------------------ connections
    def _connect(self) -> _Connection:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        deadline = time.monotonic() + self.connect_timeout_s
        delay = 0.05
        while True:
            try:
                ws = connect(self.uri, compression=None, max_size=CLIENT_LIMITS.max_message_bytes,
                             additional_headers=headers, open_timeout=max(1.0, min(10.0, self.connect_timeout_s)),
                             proxy=None, ping_interval=None)
                break
            except InvalidStatus as e:
                status = e.response.status_code
                if status in (401, 403):
                    raise PermissionError(f"{self.uri} refused the connection ({status}): wrong or missing API key") from e
                if time.monotonic() + delay > deadline:
                    raise ConnectionError(f"{self.uri} refused the connection with HTTP {status}") from e
            except (OSError, TimeoutError) as e:
                if time.monotonic() + delay > deadline:
                    raise ConnectionError(f"no policy server at {self.uri} after {self.connect_timeout_s:g} s: {e}") from e
            time.sleep(delay)
            delay = min(2.0, delay * 2)
        try:
            frame = ws.recv(timeout=self.recv_timeout_s)
            metadata = wire.unpackb(frame, CLIENT_LIMITS)
        except Exception:
            ws.close()
            raise
        if not isinstance(metadata, dict):
            ws.close()
            raise ConnectionError(f"{self.uri} sent metadata of type {type(metadata).__name__}, expected a map")
        return _Connection(ws, metadata)

    def _conn(self, env_id: int) -> _Connection:
        if env_id not in self._conns:
            self._conns[env_id] = self._connect()
        return self._conns[env_id]

    def _drop(self, env_id: int) -> None:
        conn = self._conns.pop(env_id, None)
        if conn is not None:
            conn.ws.close()

    def _send(self, env_id: int, msg: dict[str, Any]) -> int | None:
        conn = self._conn(env_id)
        rid = None
        if "request_id" in self.features:
            rid = next(conn.ids)
            msg = {**msg, "request_id": rid}
        conn.ws.send(wire.packb(msg))
        return rid

    def _recv(self, env_id: int, rid: int | None) -> dict[str, Any]:
        conn = self._conns[env_id]
        deadline = time.monotonic() + self.recv_timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                frame = conn.ws.recv(timeout=left)
            except TimeoutError:
                self._drop(env_id)  # a late reply must never be read: it dies with this connection
                raise TimeoutError(f"no reply from {self.uri} within {self.recv_timeout_s:g} s "
                                   "(connection dropped; the next call reconnects)") from None
            if isinstance(frame, str):
                if frame.startswith(wire.RETRYABLE_ERROR):
                    raise RetryableServerError(f"Error in inference server:\n{frame}")
                raise RuntimeError(f"Error in inference server:\n{frame}")
            reply = wire.unpackb(frame, CLIENT_LIMITS)
            if not isinstance(reply, dict):
                raise RuntimeError(f"server reply is a {type(reply).__name__}, expected a map")
            if rid is not None and reply.get("request_id") != rid:
                self.stale_replies_dropped += 1
                log.warning("dropped a stale reply (request_id %r, waiting for %r)", reply.get("request_id"), rid)
                continue
            return reply

    def _exchange(self, items: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Send every (env id, message), then read each reply; a dropped connection or a retryable
        error is redone once (retries are sent together, so the server may batch them again)."""
        from websockets.exceptions import ConnectionClosed

        rids: dict[int, int | None] = {}
        failed: set[int] = set()
        retry: set[int] = set()
        for env_id, msg in items:
            try:
                rids[env_id] = self._send(env_id, msg)
            except ConnectionClosed:
                failed.add(env_id)
        replies: dict[int, dict[str, Any]] = {}
        for env_id, _ in items:
            if env_id in failed:
                continue
            try:
                replies[env_id] = self._recv(env_id, rids[env_id])
            except ConnectionClosed:
                failed.add(env_id)
            except RetryableServerError as e:
                log.warning("env %d: %s; sending the request once more", env_id, str(e).splitlines()[-1][:200])
                retry.add(env_id)
        for env_id, msg in items:
            if env_id in failed:
                log.warning("connection of env %d to %s dropped; reconnecting", env_id, self.uri)
                self._drop(env_id)
                self.reconnects += 1
            if env_id in failed or env_id in retry:
                rids[env_id] = self._send(env_id, msg)
        for env_id, _ in items:
            if env_id in failed or env_id in retry:
                replies[env_id] = self._recv(env_id, rids[env_id])
        self.retries += len(retry)
        return [replies[env_id] for env_id, _ in items]

    # ------------------------------------------------------------------ Policy API
    def encode(self, obs: Observation) -> dict[str, Any]:
        """The request for one observation, in the server's input format."""
        inputs = self.inputs
        if self.input_format == "vla_gym":
            msg: dict[str, Any] = {"instruction": obs["instruction"]}
            if inputs.cameras:
                msg["images"] = {c: np.ascontiguousarray(obs["images"][c], dtype=np.uint8) for c in inputs.cameras}
            if inputs.uses_state:
                msg["state"] = np.asarray(obs["state"], dtype=np.float32)
            if inputs.uses_privileged:
                msg["privileged"] = obs["privileged"]
            return msg
        msg = {"prompt": obs["instruction"]}
        for cam in inputs.cameras:
            msg[wire.OPENPI_LIBERO_CAMERAS[cam]] = wire.upright_to_openpi(obs["images"][cam], self.openpi_image_size)
        if inputs.uses_state:
            msg["observation/state"] = np.asarray(obs["state"], dtype=np.float64)  # as openpi's LIBERO client
        return msg

    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None) -> ActionChunk:
        """Send each row to its env's connection, then read the replies (so the server can batch them)."""
        ids = resolve_env_ids(observations, env_ids)
        t0 = time.perf_counter()
        msgs = [self.encode(o) for o in observations]
        t1 = time.perf_counter()
        replies = self._exchange(list(zip(ids, msgs)))
        t2 = time.perf_counter()
        rows = []
        for reply in replies:
            actions = reply.get("actions")
            if not isinstance(actions, np.ndarray) or actions.ndim != 2 or actions.dtype.kind != "f":
                raise RuntimeError(f"server reply has no (T, D) float 'actions': {type(actions).__name__}")
            if actions.shape[1] != self.action_dim:
                raise RuntimeError(f"server sent {actions.shape[1]}-D actions, expected {self.action_dim}")
            rows.append(actions.astype(np.float32))
        if len({r.shape for r in rows}) != 1:
            raise RuntimeError(f"server chunks of different shapes {[r.shape for r in rows]}")
        t3 = time.perf_counter()
        server = [r.get("server_timing", {}) for r in replies]
        policy = [r.get("policy_timing", {}) for r in replies]
        server_ms = max(float(s.get("infer_ms", 0.0)) for s in server)
        model_ms = max(float(p.get("infer_ms", 0.0)) for p in policy)
        timing = {"preprocess": 1e3 * (t1 - t0), "model": model_ms, "server": max(0.0, server_ms - model_ms),
                  "network": max(0.0, 1e3 * (t2 - t1) - server_ms), "postprocess": 1e3 * (t3 - t2)}
        return ActionChunk(np.stack(rows), info={"timing_ms": timing, "server_timing": server,
                                                 "policy_timing": policy})

    def reset(self, env_ids: Sequence[int] | None = None, seeds: Sequence[int | None] | None = None) -> None:
        """Reset the server-side state of ``env_ids`` (vla_gym servers only; openpi servers keep none)."""
        if "reset" not in self.features:
            return  # openpi servers keep no per-episode state the client could reset
        targets = reset_targets(env_ids, seeds) or [(i, None) for i in sorted(self._conns)]
        items = [(i, {"reset": True, "seed": None if s is None else int(s)}) for i, s in targets]
        for reply in self._exchange(items):
            if reply.get("reset") is not True:
                raise RuntimeError(f"server did not acknowledge the reset: {sorted(reply)}")

    def info(self) -> PolicyInfo:
        """The served policy's description, from the server's metadata."""
        p = self.metadata.get("policy", {}) if self.vla_gym_server else {}
        return PolicyInfo(name=f"remote:{p.get('name', 'openpi')}", action_dim=self.action_dim,
                          chunk_size=int(p.get("chunk_size", 1)), dtype=str(p.get("dtype", "unknown")),
                          quantization=str(p.get("quantization", "unknown")), device=str(p.get("device", "remote")),
                          extra={"uri": self.uri, "input_format": self.input_format, "server": p})

    def close(self) -> None:
        """Close every connection."""
        for env_id in list(self._conns):
            self._drop(env_id)
