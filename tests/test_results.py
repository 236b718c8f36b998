"""Success statistics and result files."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace

import pytest

from vla_gym.results import (
    EpisodeRecord,
    aggregate,
    append_record,
    atomic_write_json,
    current_umask,
    load_records,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [  # reference values from the Wilson score formula (z = 1.96)
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (47, 50, 0.8378, 0.9794),
    ],
)
def test_wilson_interval(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(lo, abs=1e-4) and got[1] == pytest.approx(hi, abs=1e-4)


def _rec(**kw):
    base = EpisodeRecord(suite="libero_spatial", task="t0", task_index=0, init_state_id=0, episode_index=0,
                         seed=7, instruction="do it", success=True, steps=10, sum_reward=1.0, wall_s=1.0)
    return replace(base, **kw)


def test_aggregate_per_task_per_suite_overall():
    recs = [_rec(episode_index=0), _rec(episode_index=1, success=False, steps=20),
            _rec(task="t1", task_index=1), _rec(suite="libero_object", task="o0", error="RuntimeError: x",
                                                success=False)]
    res = aggregate(recs, {"policy": "p"})
    assert res["per_task"]["libero_spatial/t0"]["successes"] == 1
    assert res["per_task"]["libero_spatial/t0"]["mean_steps"] == 15
    assert res["per_group"]["libero_spatial"]["pc_success"] == pytest.approx(200 / 3)
    assert res["overall"]["episodes"] == 4 and res["overall"]["errors"] == 1
    assert res["meta"] == {"policy": "p"}


def test_jsonl_roundtrip_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "episodes.jsonl"
    append_record(path, _rec())
    append_record(path, _rec(episode_index=1))
    with open(path, "a") as f:
        f.write('{"suite": "libero_spa')  # crash mid-write
    assert [r.episode_index for r in load_records(path)] == [0, 1]
    append_record(path, _rec(episode_index=2))  # the resumed run's next record survives
    assert [r.episode_index for r in load_records(path)] == [0, 1, 2]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_gives_the_umask_mode(tmp_path, umask, mode):
    """Reports on a shared cluster must be as readable as any file the user writes (not 0600)."""
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        (tmp_path / "plain.txt").write_text("x")  # what an ordinary write gives, for comparison
        atomic_write_json(tmp_path / "r.json", {"a": 2})  # a rewrite keeps that mode too
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode


def test_umask_fallback_without_proc(monkeypatch):
    """Where /proc is missing the umask is read by set-and-restore, and left as it was."""
    real_open = open

    def no_proc(path, *a, **kw):
        if str(path) == "/proc/self/status":
            raise FileNotFoundError(path)
        return real_open(path, *a, **kw)

    monkeypatch.setattr("builtins.open", no_proc)
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # unchanged by the read
    finally:
        os.umask(old)
