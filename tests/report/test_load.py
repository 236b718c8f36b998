"""Run discovery and loading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vla_gym.report.load import ReportInputError, discover_run_dirs, load_runs, policy_label
from vla_gym.results import EpisodeRecord

from .conftest import N_EPISODES


def test_discovers_runs_recursively_and_skips_empty(runs_root: Path, capsys: pytest.CaptureFixture) -> None:
    dirs = discover_run_dirs([runs_root])
    rel = [d.relative_to(runs_root.resolve()).as_posix() for d in dirs]
    assert rel == ["multirun/0", "multirun/1", "multirun/2", "sweep/0", "sweep/1", "sweep/2"]
    runs = load_runs([runs_root])
    assert [r.path.name for r in runs] == ["0", "1", "2", "0", "1"]
    assert sum(len(r.episodes) for r in runs) == N_EPISODES
    assert "sweep/2/episodes.jsonl has no complete episode" in capsys.readouterr().err


def test_same_run_given_twice_is_read_once(runs_root: Path) -> None:
    dirs = discover_run_dirs(
        [
            runs_root / "multirun",
            runs_root / "multirun" / "0",
            runs_root / "multirun" / "0" / "episodes.jsonl",
        ]
    )
    assert len(dirs) == 3


def test_no_runs_error_names_searched_paths(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    with pytest.raises(ReportInputError, match=f"found under: {a}, {b}"):
        discover_run_dirs([a, b])
    with pytest.raises(ReportInputError, match="does not exist"):
        discover_run_dirs([tmp_path / "nope"])


def test_cli_exit_status_and_message(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vla_gym.report", str(tmp_path)], check=False, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "no run directories" in proc.stderr and str(tmp_path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_policy_label_adds_quantization(tmp_path: Path) -> None:
    rec = EpisodeRecord(
        suite="s",
        task="t",
        task_index=0,
        init_state_id=0,
        episode_index=0,
        seed=0,
        instruction="",
        success=True,
        steps=1,
        sum_reward=0.0,
        wall_s=0.0,
        policy="openvla",
    )
    assert policy_label(rec, {"quantization": "int8"}, tmp_path) == "openvla[int8]"
    assert policy_label(rec, {"quantization": {"name": "nf4"}}, tmp_path) == "openvla[nf4]"
    assert policy_label(rec, {"quantization": "none"}, tmp_path) == "openvla"
    rec.policy = ""
    assert policy_label(rec, {"policy": {"name": "pi0"}}, tmp_path) == "pi0"
    assert policy_label(rec, {}, tmp_path / "run7") == "run7"
