"""``python -m vla_gym.serve``: serve any vla_gym policy over openpi's websocket protocol.

Composed by Hydra from ``conf/serve.yaml`` (policy x quantization, as the runner)::

    python -m vla_gym.serve policy=openvla_oft policy.checkpoint=/ckpt quantization=int8 port=8000

Protocol (openpi ``serving/websocket_policy_server.py``, so openpi's own
``WebsocketClientPolicy`` and LIBERO client work unchanged): on connect the server sends ONE
binary msgpack frame of metadata (the served policy's name, the inputs it reads, chunk size and
execution defaults, action dim, quantization, the input mapping and the limits); then every
binary frame from the client is an observation answered by
``{"actions": float32 (T, D), "policy_timing": {...}, "server_timing": {...}}``.
``GET /healthz`` answers ``200 OK`` without upgrading. vla_gym additions, ignored by openpi
clients: a request may carry ``request_id`` (echoed in the reply, so a client can drop stale
replies) and ``{"reset": true, "seed": s}`` resets that connection's env in the policy.

Errors: a malformed or invalid request (bad msgpack, disallowed dtype, unknown, missing or
wrong keys, shapes, or values out of range after the cast to the dtype the policy receives) is
answered with a text frame ``"Invalid request: ..."`` and the connection stays open (after
``max_errors_per_connection`` consecutive ones it is closed with 1008). Requests are decoded and
validated completely (see :mod:`vla_gym.wire`) before anything is allocated, before they join a
batch and before the policy is called.

Isolation: if a batched ``act`` still raises, no client ever sees another client's data: the
traceback goes to the server log only, under an error id, and clients get text frames that quote
the id. For a policy that declares ``stateless_act`` the rows are retried alone: the rows that
succeed are answered normally, and only a row that fails alone gets ``"Policy error (error id
...)"`` followed by close 1011 (openpi's code for a policy failure). Otherwise (per-env state: a
retry could skip a row's RNG draw or replay step) a request that failed alone gets that, and every
request of a failed batch of several gets ``"Retryable error (error id ...)"``: its connection
stays open and it may be sent again (``policy=remote`` does so once).

Batching: each connection is one env (its own env id, reset on connect), and requests that
arrive within ``batch_window_ms`` of the first pending one, up to ``max_batch``, are answered
by one ``policy.act([...], env_ids=[...])`` call. The batch is dispatched as soon as every
connected client has a request pending, so one client alone never waits for the window.

Security: binds 127.0.0.1 unless ``host=`` says otherwise (a warning is logged when another
interface is served without ``api_key``); with ``api_key`` set, the handshake must carry
``Authorization: Api-Key <key>`` (openpi's client header), else it is refused with 401.
Fairness: at most ``max_connections`` established connections (beyond that a handshake is
refused with HTTP 503 until one leaves) and ``max_connections_per_peer`` from one IP address; a
connection that sends no valid request within ``idle_timeout_s`` of its handshake is closed (1008); a
handshake must complete within ``handshake_timeout_s``. Only connections that completed the
handshake (API key accepted) count against the caps, so with an API key an unauthenticated
socket holds nothing but its TCP socket, and only until ``handshake_timeout_s``.
SIGTERM/SIGINT: stop accepting, let in-flight requests finish, close clients with 1001.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from vla_gym import wire
from vla_gym.policy import Observation, Policy

log = logging.getLogger("vla_gym.serve")

PROTOCOL_VERSION = 1
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ACTIVE_S = 1.0
"""A connection counts as an active client (one the batcher waits for) this long after its last valid
request or reply (invalid requests never make a client one that others wait for)."""


@dataclass(frozen=True)
class ServerOptions:
    """Everything ``conf/serve.yaml`` sets besides the policy (each field is documented there)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    input_format: str = "vla_gym"
    openpi_image_size: int = 224
    batch_window_ms: float = 2.0
    max_batch: int = 8
    max_requests_per_s: float = 1000.0
    max_connections: int = 64
    max_connections_per_peer: int = 32
    idle_timeout_s: float = 10.0
    handshake_timeout_s: float = 10.0
    max_errors_per_connection: int = 100
    shutdown_grace_s: float = 10.0
    limits: wire.Limits = field(default_factory=wire.Limits)

    def __post_init__(self) -> None:
        wire.input_format(self.input_format)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.batch_window_ms < 0:
            raise ValueError(f"batch_window_ms must be >= 0, got {self.batch_window_ms}")
        for name in ("max_connections", "max_connections_per_peer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("idle_timeout_s", "handshake_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


def bind_warning(host: str, api_key: str | None) -> str | None:
    """The warning to log for ``host``: serving beyond loopback without an API key."""
    if host in LOOPBACK_HOSTS or api_key:
        return None
    return (f"serving on {host!r} (not loopback) WITHOUT an API key: anyone who can reach this port can "
            "query the policy. Set api_key=... (clients send 'Authorization: Api-Key <key>').")


def _plain(obj: Any) -> Any:
    """A msgpack-safe copy of metadata (tuples -> lists, unknown objects -> str)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


@dataclass
class _Pending:
    env_id: int
    obs: Observation
    future: asyncio.Future
    t_enqueued: float


@dataclass(frozen=True)
class _Row:
    """One request's outcome of a batched ``act``: its chunk, or which error its client gets."""

    actions: np.ndarray | None
    info: dict
    act_ms: float
    error: str | None = None
    """None, ``"fault"`` (the policy raised on this row alone) or ``"retryable"`` (a batch with it failed)."""
    error_id: str = ""
    error_type: str = ""


class PolicyFailed(Exception):
    """The policy raised on this client's request; the client gets only :attr:`text` (no traceback)."""

    def __init__(self, row: _Row) -> None:
        super().__init__(row.error_id)
        self.row = row

    @property
    def retryable(self) -> bool:
        """Whether the row failed only because a batch it shared failed (the client may resend)."""
        return self.row.error == "retryable"

    @property
    def text(self) -> str:
        """What the client is told: the error id and whether to resend, never a traceback."""
        if self.retryable:
            return (f"{wire.RETRYABLE_ERROR} (error id {self.row.error_id}): the policy failed on a batch that held "
                    "your request and another client's; yours was not answered and may be sent again")
        return (f"{wire.POLICY_ERROR} (error id {self.row.error_id}): the policy raised {self.row.error_type} on "
                "this request; quote the error id to the server's operator (the traceback is in its log)")


def _error_id() -> str:
    return uuid.uuid4().hex[:12]


class _TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.tokens = float(rate)
        self.t = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class PolicyServer:
    """An openpi-compatible websocket server around one :class:`~vla_gym.policy.Policy`.

    Args:
        policy: The policy to serve (its ``inputs`` declare what requests must contain).
        options: Network, batching and limit options.
        name: Name announced in the metadata (default: ``policy.info().name``).
        quantization: Quantization announced in the metadata.
    """

    def __init__(self, policy: Policy, options: ServerOptions = ServerOptions(), *, name: str | None = None,
                 quantization: str = "none") -> None:
        self.policy = policy
        self.options = options
        self.format = wire.input_format(options.input_format)
        self.format.check_policy(policy.inputs)
        info = policy.info()
        self.info = info
        self.name = name or info.name
        self.quantization = quantization if quantization != "none" else info.quantization
        self.port: int | None = None
        self.address: tuple[str, int] | None = None
        self.batch_sizes: list[int] = []
        """Size of every batched ``act`` call (for tests and benchmarks)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vla_gym-policy")
        self._free_ids: list[int] = []
        self._next_id = 0
        self._connections: dict[Any, float] = {}  # connection -> time of its last request
        self._peers: Counter[str] = Counter()  # peer IP -> established connections
        self._pending: list[_Pending] = []
        self._running: list[_Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight = 0
        self.draining = False

    # ------------------------------------------------------------------ metadata
    def metadata(self, env_id: int) -> dict[str, Any]:
        """The first frame of every connection: what the served policy reads and returns."""
        inputs, execution = self.policy.inputs, self.policy.execution
        o = self.options
        return _plain({
            "server": "vla_gym",
            "protocol_version": PROTOCOL_VERSION,
            "policy": {"name": self.name, "class": type(self.policy).__qualname__, "action_dim": self.info.action_dim,
                       "chunk_size": self.info.chunk_size, "quantization": self.quantization,
                       "dtype": self.info.dtype, "device": self.info.device},
            "inputs": wire.inputs_to_dict(inputs),
            "execution": {"mode": execution.mode, "replan_steps": execution.replan_steps},
            "action_dim": self.info.action_dim,
            "chunk_size": self.info.chunk_size,
            "quantization": self.quantization,
            "input_format": self.format.name,
            "openpi_image_size": o.openpi_image_size,
            "input_mapping": {"description": self.format.description,
                              "expects": self.format.expected(inputs, o.openpi_image_size)},
            "reference_scene_seed": self.policy.reference_scene_seed,
            "env_id": env_id,
            "features": ["request_id", "reset"],
            "limits": asdict(o.limits),
            "connections": {"max": o.max_connections, "max_per_peer": o.max_connections_per_peer,
                            "idle_timeout_s": o.idle_timeout_s, "handshake_timeout_s": o.handshake_timeout_s},
            "batching": {"window_ms": o.batch_window_ms, "max_batch": o.max_batch},
        })

    # ------------------------------------------------------------------ policy thread
    async def _in_policy_thread(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _act(self, batch: list[_Pending]) -> list[_Row]:
        """One batched act (in the policy thread); a failure is isolated as the module docstring says."""
        t0 = time.perf_counter()
        try:
            rows = self._act_rows(batch)
            self.batch_sizes.append(len(batch))
            return rows
        except Exception as e:  # noqa: BLE001 - logged with its traceback; clients get the error id only
            error_id = _error_id()
            log.exception("policy error %s: act on env ids %s raised", error_id, [p.env_id for p in batch])
            failed = _Row(None, {}, 1e3 * (time.perf_counter() - t0), "fault", error_id, type(e).__name__)
        if len(batch) == 1:
            return [failed]
        if not self.policy.stateless_act:
            return [_Row(None, {}, failed.act_ms, "retryable", failed.error_id)] * len(batch)
        out = []
        for p in batch:  # no per-env state: each row alone gives exactly what it would have in the batch
            t1 = time.perf_counter()
            try:
                out.extend(self._act_rows([p]))
                self.batch_sizes.append(1)
            except Exception as e:  # noqa: BLE001 - this row is at fault
                error_id = _error_id()
                log.exception("policy error %s: act on env id %d alone raised (retry of batch error %s)",
                              error_id, p.env_id, failed.error_id)
                out.append(_Row(None, {}, 1e3 * (time.perf_counter() - t1), "fault", error_id, type(e).__name__))
        return out

    def _act_rows(self, batch: list[_Pending]) -> list[_Row]:
        t0 = time.perf_counter()
        result = self.policy.act([p.obs for p in batch], env_ids=[p.env_id for p in batch])
        if result.batch_size != len(batch):
            raise ValueError(f"policy returned {result.batch_size} chunks for {len(batch)} observations")
        ms = 1e3 * (time.perf_counter() - t0)
        return [_Row(result.actions[i], result.info, ms) for i in range(len(batch))]

    async def _batcher(self) -> None:
        assert self._wakeup is not None
        window = self.options.batch_window_ms / 1e3
        free_since = time.perf_counter()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            # the window opens when the first request is pending AND the policy is free: clients
            # answered by the previous batch get the window to send their next request and join
            deadline = max(self._pending[0].t_enqueued, free_since) + window
            while len(self._pending) < min(self.options.max_batch, self._active_clients()):
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = self._pending[: self.options.max_batch]
            del self._pending[: len(batch)]
            self._running = batch
            rows = await self._in_policy_thread(self._act, batch)
            self._running = []
            free_since = time.perf_counter()
            for p, row in zip(batch, rows):
                if not p.future.done():
                    p.future.set_result((row, len(batch)))

    def _active_clients(self) -> int:
        """Connections that sent a request in the last :data:`ACTIVE_S` (idle ones never hold a batch back)."""
        since = time.perf_counter() - ACTIVE_S
        return max(1, sum(1 for t in self._connections.values() if t >= since))

    async def _submit(self, env_id: int, obs: Observation) -> tuple[np.ndarray, dict, float, int, float]:
        assert self._loop is not None and self._wakeup is not None
        fut = self._loop.create_future()
        t = time.perf_counter()
        self._pending.append(_Pending(env_id, obs, fut, t))
        self._wakeup.set()
        row, batch = await fut
        if row.error is not None:
            raise PolicyFailed(row)
        return row.actions, row.info, row.act_ms, batch, 1e3 * (time.perf_counter() - t)

    # ------------------------------------------------------------------ connections
    def _alloc_env_id(self) -> int:
        if self._free_ids:
            return self._free_ids.pop(0)
        self._next_id += 1
        return self._next_id - 1

    def _process_request(self, connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        key = self.options.api_key
        if key:
            got = request.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode(), f"Api-Key {key}".encode()):
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        if self.draining:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "server shutting down\n")
        if len(self._connections) >= self.options.max_connections:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        if self._peers[_peer(connection)] >= self.options.max_connections_per_peer:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections from this address\n")
        return None

    def _over_cap(self, peer: str) -> str | None:
        """Why an established connection must leave again (handshakes that raced past the check), or None."""
        if len(self._connections) > self.options.max_connections:
            return "too many connections"
        if self._peers[peer] > self.options.max_connections_per_peer:
            return "too many connections from this address"
        return None

    async def _handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        from vla_gym.wire import WireError

        peer = _peer(ws)
        self._connections[ws] = 0.0
        self._peers[peer] += 1
        env_id: int | None = None
        o = self.options
        bucket = _TokenBucket(o.max_requests_per_s)
        errors = 0
        prev_total_ms: float | None = None
        try:
            refused = self._over_cap(peer)
            if refused:
                await ws.close(1013, refused)  # "try again later"
                return
            env_id = self._alloc_env_id()
            await self._in_policy_thread(self.policy.reset, env_ids=[env_id])
            await ws.send(wire.packb(self.metadata(env_id)))
            idle_deadline: float | None = time.monotonic() + o.idle_timeout_s
            while True:
                if idle_deadline is not None:  # no valid request yet: such a connection must not hold a slot
                    try:
                        message = await asyncio.wait_for(ws.recv(), max(0.0, idle_deadline - time.monotonic()))
                    except asyncio.TimeoutError:
                        await ws.close(1008, f"no valid request within idle_timeout_s={o.idle_timeout_s:g}")
                        break
                else:
                    message = await ws.recv()
                t0 = time.perf_counter()
                if self.draining:
                    await ws.send("Invalid request: server shutting down")
                    break
                request_id = None
                try:
                    if not bucket.take():
                        raise WireError(f"rate limit of {o.max_requests_per_s:g} requests/s exceeded")
                    msg = wire.unpackb(message, o.limits)
                    if isinstance(msg, dict):
                        request_id = msg.get("request_id")
                        if request_id is not None and (type(request_id) is not int or abs(request_id) > 2**62):
                            request_id = None
                            raise WireError("request_id must be an int")
                    if isinstance(msg, dict) and "reset" in msg:
                        seed = self._check_reset(msg)
                        self._in_flight += 1
                        try:
                            await self._in_policy_thread(self.policy.reset, env_ids=[env_id], seeds=[seed])
                        finally:
                            self._in_flight -= 1
                        await ws.send(wire.packb({"reset": True, "env_id": env_id, "request_id": request_id}))
                        self._connections[ws] = time.perf_counter()
                        errors, idle_deadline = 0, None
                        continue
                    obs = self.format.convert(msg, self.policy.inputs, o.openpi_image_size)
                except WireError as e:
                    errors += 1
                    await ws.send(f"Invalid request: {e}")
                    if errors >= o.max_errors_per_connection:
                        await ws.close(1008, "too many invalid requests")
                        break
                    continue
                errors, idle_deadline = 0, None
                self._connections[ws] = t0  # only valid requests make a client one the batcher waits for
                decode_ms = 1e3 * (time.perf_counter() - t0)
                self._in_flight += 1
                try:
                    actions, info, act_ms, batch, wait_ms = await self._submit(env_id, obs)
                    reply: dict[str, Any] = {
                        "actions": actions,
                        "policy_timing": {"infer_ms": act_ms, **{f"{k}_ms": float(v) for k, v in
                                                                 info.get("timing_ms", {}).items()}},
                    }
                    if request_id is not None:
                        reply["request_id"] = request_id
                    timing = {"infer_ms": 1e3 * (time.perf_counter() - t0), "decode_ms": decode_ms,
                              "queue_ms": max(0.0, wait_ms - act_ms), "batch_size": batch, "env_id": env_id}
                    if prev_total_ms is not None:
                        timing["prev_total_ms"] = prev_total_ms
                    reply["server_timing"] = timing
                    await ws.send(wire.packb(reply))
                    self._connections[ws] = time.perf_counter()  # just answered: likely to ask again soon
                except PolicyFailed as failed:
                    await ws.send(failed.text)  # the error id only: the traceback is in the server log
                    if failed.retryable:
                        continue
                    await ws.close(1011, f"policy error {failed.row.error_id}")
                    break
                finally:
                    self._in_flight -= 1
                prev_total_ms = 1e3 * (time.perf_counter() - t0)
        except ConnectionClosed:
            pass
        finally:
            self._connections.pop(ws, None)
            self._peers[peer] -= 1
            if self._peers[peer] <= 0:
                del self._peers[peer]
            if env_id is not None:
                self._free_ids.append(env_id)
                self._free_ids.sort()

    @staticmethod
    def _check_reset(msg: dict) -> int | None:
        from vla_gym.wire import WireError

        if set(msg) - {"reset", "seed", "request_id"} or msg["reset"] is not True:
            raise WireError("a reset message is {'reset': true, 'seed': int | null}")
        seed = msg.get("seed")
        if seed is not None and (type(seed) is not int or not 0 <= seed < 2**63):
            raise WireError("reset seed must be a non-negative int or null")
        return seed

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self) -> None:
        """Begin a graceful shutdown (thread-safe; also the SIGTERM handler)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def serve(self, ready: Callable[[int], None] | None = None) -> None:
        """Serve until :meth:`request_stop`; ``ready(port)`` is called once listening."""
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        o = self.options
        warning = bind_warning(o.host, o.api_key)
        if warning:
            log.warning(warning)
        async with serve(self._handler, o.host, o.port, compression=None, max_size=o.limits.max_message_bytes,
                         max_queue=2, process_request=self._process_request,
                         open_timeout=o.handshake_timeout_s) as server:
            self.address = server.sockets[0].getsockname()[:2]
            self.port = int(self.address[1])
            batcher = asyncio.create_task(self._batcher())
            log.info("serving %s on ws://%s:%d (input_format=%s)", self.name, o.host, self.port, self.format.name)
            if ready is not None:
                ready(self.port)
            await self._stop.wait()
            log.info("shutting down: finishing %d in-flight request(s)", self._in_flight)
            self.draining = True
            server.close(close_connections=False)  # stop accepting
            deadline = time.monotonic() + o.shutdown_grace_s
            while (self._in_flight or self._pending) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            batcher.cancel()
            for p in self._running + self._pending:  # only left when the grace time ran out
                if not p.future.done():
                    p.future.set_exception(RuntimeError("server shut down before the policy answered"))
            for ws in list(self._connections):
                await ws.close(1001, "server shutting down")
            await server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _peer(connection: Any) -> str:
    """The peer's IP address (connections are capped per address, not per port)."""
    address = connection.remote_address
    return str(address[0]) if address else "?"


@contextmanager
def serve_in_thread(policy: Policy, **options: Any) -> Iterator[PolicyServer]:
    """Run a :class:`PolicyServer` on an ephemeral loopback port in a background thread.

    >>> from vla_gym.policies.random_policy import RandomPolicy
    >>> with serve_in_thread(RandomPolicy()) as server:
    ...     server.port > 0
    True
    """
    options.setdefault("port", 0)
    server = PolicyServer(policy, ServerOptions(**options))
    started = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(ready=lambda _: started.set()))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)
            started.set()

    thread = threading.Thread(target=run, name="vla_gym-serve", daemon=True)
    thread.start()
    started.wait(30)
    if errors:
        raise errors[0]
    try:
        yield server
    finally:
        server.request_stop()
        thread.join(30)


# ---------------------------------------------------------------------------- entry point
def options_from_config(cfg: Any) -> ServerOptions:
    """:class:`ServerOptions` from the composed ``conf/serve.yaml``."""
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True)
    limits = wire.Limits(**(c.get("limits") or {}))
    names = {f.name for f in fields(ServerOptions)} - {"limits"}
    return ServerOptions(limits=limits, **{k: c[k] for k in names if k in c})


def _hydra_main(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig

    from vla_gym.rollout import build_policy

    choices = dict(HydraConfig.get().runtime.choices)
    options = options_from_config(cfg)
    policy = build_policy(cfg.policy, cfg.quantization)
    quantization = (cfg.quantization or {}).get("name", "none")
    server = PolicyServer(policy, options, name=choices.get("policy"), quantization=quantization)

    def ready(port: int) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_stop)
        if cfg.port_file:
            tmp = Path(str(cfg.port_file) + ".tmp")
            tmp.write_text(str(port))
            tmp.replace(cfg.port_file)
        print(f"vla_gym.serve: {server.name} on ws://{options.host}:{port}", flush=True)

    try:
        asyncio.run(server.serve(ready=ready))
    finally:
        policy.close()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: validate overrides, then hand over to Hydra."""
    import hydra

    from vla_gym.config import CONFIG_MODULE, check_overrides

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    check_overrides([a for a in argv if not a.startswith("-")], config_name="serve")
    sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="serve", version_base="1.3")(_hydra_main)()


if __name__ == "__main__":
    main()
