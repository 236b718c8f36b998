"""The ``execution`` config (timing, handoff, latency source): typed schema, validation, builders.

Keys users and sweeps rely on (issue 21): ``execution.timing`` (``synchronous`` | ``blocking`` |
``async``), ``execution.handoff`` (``replace`` | ``temporal_ensemble`` | ``rtc``: ``async`` and a policy
with ``supports_rtc`` only; settings ``execution.rtc.*``),
``execution.latency.source`` (``fixed`` | ``distribution`` | ``measured`` | ``trace`` |
``profile``) and ``execution.latency.ms``. Presets live in ``conf/execution/`` (a Hydra group).

Every bad value is one ``ValueError`` line naming the key, which the CLI prints as
``error: ...`` with a non-zero exit. ``synchronous`` ignores the latency on purpose: in a
latency sweep its runs are the frozen-world reference line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vla_gym import latency_sources as ls
from vla_gym.timing import (
    DEFAULT_CONTROL_PERIOD_MS, RTC_GUIDANCE, RTC_SCHEDULES, RTC_TIMING, TIMINGS, TimedExecutor, check_handoff,
    make_timed_executor,
)

LATENCY_SOURCES = ("fixed", "distribution", "measured", "trace", "profile")


@dataclass
class LatencyConfig:
    """Where each query's simulated latency comes from (:mod:`vla_gym.latency_sources`)."""

    source: str = "fixed"
    ms: float = 0.0
    """``fixed``: the latency; ``distribution``: the mean when ``mean_ms`` is null."""
    mean_ms: Optional[float] = None
    """``distribution``: mean of the log-normal (null = ``ms``)."""
    p95_ms: Optional[float] = None
    """``distribution``: its 95th percentile (mean <= p95 <= 3.87 x mean)."""
    seed: int = 0
    """``distribution``: combined with each episode's seed."""
    scale: float = 1.0
    """``measured``: wall time x scale (2 = hardware twice as slow)."""
    trace: Optional[str] = None
    """``trace``: a run directory recorded with trajectories; each episode replays its own."""
    profile: str = "published"
    """``profile``: a shipped profile name or a JSON file path."""
    policy: Optional[str] = None
    """``profile``: the row's policy (null = the policy config's name)."""
    hardware: Optional[str] = None
    """``profile``: the row's hardware (e.g. ``rtx4090``)."""
    batch_size: int = 1
    """``profile``: the row's batch size."""


@dataclass
class RTCConfig:
    """Real-time chunking settings (``handoff=rtc``; :class:`vla_gym.policies.pi0.rtc.RTCRequest`)."""

    schedule: str = "exp"
    """Prefix-attention schedule over the overlap: zeros | ones | linear | exp (the paper's)."""
    max_guidance_weight: float = 10.0
    """beta, the clip of the guidance weight (LeRobot 10 for 10 denoising steps; the paper 5 for 5)."""
    guidance: str = "original"
    """``original`` (vector-Jacobian product through the network, Kinetix) or ``lerobot`` (identity Jacobian)."""
    execution_horizon: Optional[int] = None
    """End of the guided region; null = all of the previous chunk's left-over."""


@dataclass
class ExecutionConfig:
    """How the simulated robot executes chunks while the policy "thinks" (:mod:`vla_gym.timing`)."""

    timing: str = "synchronous"
    handoff: Optional[str] = None
    """``async`` only: null = ``temporal_ensemble`` for that chunk mode, else ``replace``."""
    trigger_remaining: Optional[int] = None
    """``async``: query when the current chunk has this many actions left (null = the largest recent delay)."""
    control_period_ms: Optional[float] = None
    """One control step; null = the env's (50 ms at 20 Hz)."""
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    rtc: RTCConfig = field(default_factory=RTCConfig)


def _fail(key: str, msg: str) -> None:
    raise ValueError(f"execution.{key}: {msg}")


def load_execution(cfg: Any = None) -> ExecutionConfig:
    """``cfg`` (a DictConfig, dict, ExecutionConfig or None) as a validated :class:`ExecutionConfig`."""
    if isinstance(cfg, ExecutionConfig):
        out = cfg
    else:
        try:
            merged = OmegaConf.merge(OmegaConf.structured(ExecutionConfig), cfg or {})
        except OmegaConfBaseException as e:
            first = str(e).strip().splitlines()[0]
            key = getattr(e, "full_key", None)
            raise ValueError(f"execution.{key}: {first}" if key else f"execution: {first}") from None
        out = OmegaConf.to_object(merged)
    validate(out)
    return out


def validate(c: ExecutionConfig) -> None:
    """Check every value; the first bad one raises a one-line ValueError naming its key."""
    if c.timing not in TIMINGS:
        _fail("timing", f"unknown {c.timing!r}; valid: {', '.join(TIMINGS)}")
    if c.handoff is not None:
        try:
            check_handoff(c.handoff)
        except ValueError as e:
            _fail("handoff", str(e))
    if c.handoff == "rtc" and c.timing != "async":
        _fail("handoff", RTC_TIMING)
    r = c.rtc
    if str(r.schedule).lower() not in RTC_SCHEDULES:
        _fail("rtc.schedule", f"unknown {r.schedule!r}; valid: {', '.join(RTC_SCHEDULES)}")
    if r.guidance not in RTC_GUIDANCE:
        _fail("rtc.guidance", f"unknown {r.guidance!r}; valid: {', '.join(RTC_GUIDANCE)}")
    if not (math.isfinite(r.max_guidance_weight) and 0 < r.max_guidance_weight <= 1e6):
        _fail("rtc.max_guidance_weight", f"must be in (0, 1e6], got {r.max_guidance_weight!r}")
    if r.execution_horizon is not None and r.execution_horizon < 1:
        _fail("rtc.execution_horizon", f"must be >= 1 (or null), got {r.execution_horizon}")
    t = c.trigger_remaining
    if t is not None and (isinstance(t, bool) or int(t) != t or t < 0):
        _fail("trigger_remaining", f"must be an integer >= 0 (or null), got {t!r}")
    p = c.control_period_ms
    if p is not None and not (math.isfinite(p) and p > 0):
        _fail("control_period_ms", f"must be a finite number > 0 (or null), got {p!r}")
    lat = c.latency
    if lat.source not in LATENCY_SOURCES:
        _fail("latency.source", f"unknown {lat.source!r}; valid: {', '.join(LATENCY_SOURCES)}")
    try:
        ls.check_ms(lat.ms, "execution.latency.ms")
        if lat.source == "distribution":
            if lat.p95_ms is None:
                _fail("latency.p95_ms", "source 'distribution' needs p95_ms (and mean_ms, or ms as the mean)")
            ls.lognormal_params(lat.ms if lat.mean_ms is None else lat.mean_ms, lat.p95_ms)
            if lat.seed < 0:
                _fail("latency.seed", f"must be >= 0, got {lat.seed}")
        if lat.source == "measured":
            ls.MeasuredLatency(lat.scale)
        if lat.source == "trace" and not lat.trace:
            _fail("latency.trace", "source 'trace' needs the run directory whose trajectories recorded the latencies")
        if lat.source == "profile" and not lat.hardware:
            rows = ", ".join(sorted({e.hardware for e in ls.load_profile(lat.profile)}))
            _fail("latency.hardware", f"source 'profile' needs the hardware row to use; {lat.profile!r} has: {rows}")
        if lat.batch_size < 1:
            _fail("latency.batch_size", f"must be >= 1, got {lat.batch_size}")
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith("execution.") else f"execution.latency: {msg}") from None


def control_period_ms(c: ExecutionConfig, env_control_hz: float | None = None) -> float:
    """The control period: the config's, else the env's ``1000 / control_hz``, else 50 ms."""
    if c.control_period_ms is not None:
        return float(c.control_period_ms)
    return 1000.0 / env_control_hz if env_control_hz else DEFAULT_CONTROL_PERIOD_MS


def build_executor(c: ExecutionConfig, *, mode: str = "open_loop", replan_steps: int | None = None, k: float = 0.01,
                   env_control_hz: float | None = None) -> TimedExecutor:
    """One env's executor for this config and the resolved chunk config (``chunk.*``)."""
    return make_timed_executor(c.timing, mode=mode, replan_steps=replan_steps, k=k, handoff=c.handoff,
                               trigger_remaining=c.trigger_remaining,
                               control_period_ms=control_period_ms(c, env_control_hz))


def build_latency_source(c: ExecutionConfig, policy_name: str | None = None) -> ls.LatencySource:
    """One env's latency source (build one per env: distribution RNGs and trace cursors are per env)."""
    lat = c.latency
    if lat.source == "fixed":
        return ls.FixedLatency(lat.ms)
    if lat.source == "distribution":
        return ls.LogNormalLatency(lat.ms if lat.mean_ms is None else lat.mean_ms, lat.p95_ms, lat.seed)
    if lat.source == "measured":
        return ls.MeasuredLatency(lat.scale)
    if lat.source == "trace":
        return ls.TraceLatency(run_dir=lat.trace)
    policy = lat.policy or policy_name
    if not policy:
        raise ValueError("execution.latency.policy: source 'profile' needs the policy row to use")
    entry = ls.profile_entry(ls.load_profile(lat.profile), policy, str(lat.hardware), lat.batch_size)
    return ls.profile_source(entry, lat.seed)


def as_meta(c: ExecutionConfig) -> dict[str, Any]:
    """The config as plain data for ``results.json`` (what every record's numbers depend on)."""
    return asdict(c)
