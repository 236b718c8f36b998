"""Latency sources (fixed, distribution, measured, trace, profile) and the ``execution`` config."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from vla_gym import latency_sources as ls
from vla_gym.execution import ExecutionConfig, build_executor, build_latency_source, load_execution
from vla_gym.timing import AsyncExecutor, BlockingExecutor, delay_steps
from vla_gym.trajectory import trajectory_rel


def test_fixed_and_measured():
    assert [ls.FixedLatency(120.0).next_ms(measured_ms=3.0) for _ in range(2)] == [120.0, 120.0]
    m = ls.MeasuredLatency(scale=2.5)
    assert m.next_ms(measured_ms=40.0) == 100.0
    with pytest.raises(ValueError, match="wall time"):
        m.next_ms()
    with pytest.raises(ValueError, match="scale must be"):
        ls.MeasuredLatency(0)


def test_lognormal_has_the_requested_mean_and_p95_and_is_seeded_per_episode():
    mu, sigma = ls.lognormal_params(100.0, 150.0)
    # closed forms of the log-normal, independently of how the parameters were solved for
    assert math.exp(mu + sigma ** 2 / 2) == pytest.approx(100.0)
    assert math.exp(mu + ls.Z95 * sigma) == pytest.approx(150.0)
    src = ls.LogNormalLatency(100.0, 150.0, seed=3)
    src.reset(seed=11)
    x = np.array([src.next_ms() for _ in range(40000)])
    assert x.mean() == pytest.approx(100.0, rel=0.01)
    assert np.percentile(x, 95) == pytest.approx(150.0, rel=0.02)
    src.reset(seed=11)
    first = [src.next_ms() for _ in range(5)]
    assert first == list(x[:5])  # same episode seed -> same draws
    src.reset(seed=12)
    assert [src.next_ms() for _ in range(5)] != first
    assert ls.lognormal_params(80.0, 80.0)[1] == 0.0  # p95 = mean: no spread


@pytest.mark.parametrize("mean,p95,match", [(100, 90, "p95 must lie"), (100, 400, "p95 must lie"),
                                            (0, 10, "> 0"), (float("nan"), 10, "finite")])
def test_lognormal_refuses_impossible_values(mean, p95, match):
    with pytest.raises(ValueError, match=match):
        ls.lognormal_params(mean, p95)


def _record(path, latencies_per_step):
    """A trajectory as the runner records it: per-step ``query`` and ``latency_ms`` (NaN where none)."""
    lat = np.array([np.nan if v is None else v for v in latencies_per_step], dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, query=~np.isnan(lat), latency_ms=lat, action=np.zeros((len(lat), 7), np.float32))


def test_trace_replays_each_episodes_recorded_latencies_exactly(tmp_path):
    _record(tmp_path / trajectory_rel("task_a", 0), [101.3, None, None, 49.999999999, None])
    _record(tmp_path / trajectory_rel("task_a", 1), [7.0])
    src = ls.TraceLatency(run_dir=tmp_path)
    src.reset(seed=0, task="task_a", episode_index=0)
    assert [src.next_ms(measured_ms=1.0), src.next_ms()] == [101.3, 49.999999999]  # float64: same d on replay
    with pytest.raises(ValueError, match="exhausted.*recorded 2 queries"):
        src.next_ms()
    src.reset(seed=0, task="task_a", episode_index=1)
    assert src.next_ms() == 7.0
    with pytest.raises(ValueError, match="no recorded trajectory"):
        src.reset(seed=0, task="task_a", episode_index=2)
    np.savez_compressed(tmp_path / "old.npz", query=np.ones(2, bool))
    with pytest.raises(ValueError, match="without execution timing"):
        ls.read_trace(tmp_path / "old.npz")
    with pytest.raises(ValueError, match="exactly one"):
        ls.TraceLatency()


def test_measured_run_replayed_as_trace_gives_identical_executions():
    """Latencies drawn once (standing in for measured wall times), replayed: same actions, same records."""
    rng = np.random.default_rng(0)
    walls = list(rng.uniform(10, 180, size=50))

    def run(source, measured):
        ex, q, out = AsyncExecutor(), 0, []
        for _ in range(40):
            if ex.needs_chunk:
                ex.add_chunk(np.full((4, 7), q, np.float32), source.next_ms(measured_ms=measured[q]))
                q += 1
            out.append((ex.next_action().tolist(), ex.last_step))
        return out

    recorded = run(ls.MeasuredLatency(1.5), walls)
    trace = [rec.latency_ms for _, rec in recorded if rec.query]
    assert recorded == run(ls.TraceLatency(trace), [None] * 50)


def test_published_profile_rows_and_sources():
    rows = ls.load_profile("published")
    assert "published" in ls.shipped_profiles()
    assert all(r.source for r in rows)
    pi0 = ls.profile_entry(rows, "pi0", "rtx4090")
    assert pi0.ms == 73.0 and "2410.24164" in pi0.source
    assert delay_steps(pi0.ms) == 2  # at LIBERO's 50 ms control period
    assert isinstance(ls.profile_source(pi0), ls.FixedLatency)
    with pytest.raises(ValueError, match="no row for policy='pi0' hardware='h100'.*rows: pi0/rtx4090/B=1"):
        ls.profile_entry(rows, "pi0", "h100")


def test_profile_files_are_validated(tmp_path):
    def write(entries, fmt=ls.PROFILE_FORMAT):
        p = tmp_path / "p.json"
        p.write_text(json.dumps({"format": fmt, "entries": entries}))
        return str(p)

    good = {"policy": "x", "hardware": "cpu", "batch_size": 4, "ms": 30.0, "p95_ms": 40.0, "source": "measured here"}
    entry = ls.profile_entry(ls.load_profile(write([good])), "x", "cpu", 4)
    assert isinstance(ls.profile_source(entry, seed=1), ls.LogNormalLatency)
    for bad, match in [({**good, "ms": -1}, "ms must be"), ({**good, "batch_size": 0}, "batch_size"),
                       ({**good, "code": "import os"}, "unknown keys"), ({"policy": "x"}, "needs policy"),
                       ({**good, "p95_ms": 1000}, "p95 must lie")]:
        with pytest.raises(ValueError, match=match):
            ls.load_profile(write([bad]))
    with pytest.raises(ValueError, match="duplicate"):
        ls.load_profile(write([good, good]))
    with pytest.raises(ValueError, match="format"):
        ls.load_profile(write([good], fmt="v0"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ls.load_profile(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="no shipped latency profile 'nope'"):
        ls.load_profile("nope")


# ---------------------------------------------------------------------------- the execution config
@pytest.mark.parametrize("name,timing", [("synchronous", "synchronous"), ("blocking", "blocking"), ("async", "async")])
def test_presets_load_against_the_schema(name, timing):
    from importlib import resources

    text = (resources.files("vla_gym.conf") / "execution" / f"{name}.yaml").read_text()
    cfg = load_execution(OmegaConf.create(text))
    assert cfg.timing == timing
    ex = build_executor(cfg, mode="open_loop", replan_steps=5)
    assert {"blocking": BlockingExecutor, "async": AsyncExecutor}.get(timing, type(ex)) is type(ex)


@pytest.mark.parametrize("override,message", [
    ({"timing": "asynchronous"}, "execution.timing: unknown 'asynchronous'; valid: synchronous, blocking, async"),
    ({"handoff": "rtc"}, "execution.handoff: handoff 'rtc' (real-time chunking) needs execution.timing=async"),
    ({"timing": "async", "handoff": "rtc", "rtc": {"guidance": "kinetix"}}, "execution.rtc.guidance: unknown"),
    ({"handoff": "blend"}, "execution.handoff: unknown execution.handoff 'blend'"),
    ({"latency": {"ms": "fast"}}, "execution.latency.ms: Value 'fast'"),
    ({"latency": {"ms": -5}}, "execution.latency.ms must be a finite number of ms >= 0"),
    ({"latency": {"source": "gaussian"}}, "execution.latency.source: unknown 'gaussian'"),
    ({"latency": {"source": "distribution", "ms": 100}}, "execution.latency.p95_ms: source 'distribution' needs"),
    ({"latency": {"source": "trace"}}, "execution.latency.trace: source 'trace' needs"),
    ({"latency": {"source": "profile"}}, "execution.latency.hardware: source 'profile' needs the hardware"),
    ({"latency": {"source": "measured", "scale": 0}}, "execution.latency.scale must be a finite number > 0"),
    ({"trigger_remaining": -2}, "execution.trigger_remaining: must be an integer >= 0"),
    ({"control_period_ms": 0}, "execution.control_period_ms: must be a finite number > 0"),
    ({"latncy": {}}, "execution.latncy: Key 'latncy' not in 'ExecutionConfig'"),
])
def test_bad_values_are_one_clear_line(override, message):
    with pytest.raises(ValueError) as e:
        load_execution(override)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_build_latency_source_for_each_source(tmp_path):
    def src(**lat):
        return build_latency_source(load_execution({"timing": "async", "latency": lat}), policy_name="pi0")

    assert src(source="fixed", ms=60).next_ms() == 60
    d = src(source="distribution", ms=100, p95_ms=130, seed=2)
    d.reset(seed=5)
    assert d.next_ms() > 0
    assert src(source="measured", scale=3).next_ms(measured_ms=10) == 30
    assert src(source="profile", hardware="rtx4090").next_ms() == 73.0
    assert src(source="profile", policy="openvla", hardware="rtx4090").next_ms() == 166.7
    _record(tmp_path / trajectory_rel("t", 0), [20.0])
    tr = src(source="trace", trace=str(tmp_path))
    tr.reset(seed=0, task="t", episode_index=0)
    assert tr.next_ms() == 20.0
    assert isinstance(load_execution(None), ExecutionConfig) and load_execution(None).timing == "synchronous"


def test_measured_profile_rows_round_trip(tmp_path):
    walls = list(np.random.default_rng(0).lognormal(np.log(50), 0.1, size=200))
    entry = ls.measured_entry("pi0", "cpu2", 1, walls, "measured in a test")
    assert entry.ms == pytest.approx(np.mean(walls)) and entry.p95_ms == pytest.approx(np.percentile(walls, 95))
    assert ls.measured_entry("pi0", "cpu2", 2, [10.0, 10.0, 10.0], "flat").p95_ms == pytest.approx(10.0)
    wide = ls.measured_entry("x", "cpu2", 1, [1.0] * 50 + [1000.0], "one outlier")  # p95 1 ms < mean 20.6
    assert wide.p95_ms is None  # no log-normal has that mean and p95: fixed at the mean
    path = ls.save_profile([entry, wide], tmp_path / "p.json", about="test")
    assert ls.load_profile(str(path)) == [entry, wide]
    with pytest.raises(ValueError, match="non-empty"):
        ls.measured_entry("x", "cpu", 1, [], "none")
