"""Trackers, offline and for real: a robosuite rollout logged to TensorBoard event files and to offline
W&B runs, read back with TensorBoard's own reader and by parsing the W&B run file, compared with
``results.json`` / ``episodes.jsonl``. A failing tracker leaves the run's files unchanged."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard", reason="the trackers extra: pip install 'vla_gym[trackers]'")
wandb = pytest.importorskip("wandb", reason="the trackers extra: pip install 'vla_gym[trackers]'")

from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

import vla_gym  # noqa: E402

LIFT = dict(policy="random", env="robosuite_lift", episodes=2, max_steps=5, video={"size": 64})


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """W&B offline, every W&B directory inside the test's tmp dir."""
    root = tmp_path_factory.mktemp("wandb_home")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(root / "runs"), "WANDB_DATA_DIR": str(root / "data"),
           "WANDB_CACHE_DIR": str(root / "cache"), "WANDB_CONFIG_DIR": str(root / "config"),
           "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    (root / "runs").mkdir()
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real 2-episode robosuite Lift rollout with videos, logged to TensorBoard by the runner's hook."""
    out = tmp_path_factory.mktemp("tracked") / "run"
    vla_gym.evaluate(output_dir=out, overrides=["tracker=tensorboard"], **LIFT)
    return out


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines() if line.strip()]


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


# ------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_event_files_hold_the_results(run_dir: Path) -> None:
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={
        event_accumulator.IMAGES: 0, event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
    acc.Reload()
    records, results = _records(run_dir), _results(run_dir)
    assert len(records) == 2 and all(r["video"] for r in records)
    scalars = set(acc.Tags()["scalars"])
    success = acc.Scalars("episode/success")
    assert [(e.step, e.value) for e in success] == [(i, float(r["success"])) for i, r in enumerate(records)]
    assert [e.value for e in acc.Scalars("episode/latency_ms_mean")] == pytest.approx(
        [r["latency_ms_mean"] for r in records], rel=1e-6)
    assert [e.value for e in acc.Scalars("episode/steps")] == [r["steps"] for r in records]
    overall = results["overall"]
    assert acc.Scalars("overall/success_rate")[0].value == pytest.approx(overall["success_rate"])
    assert acc.Scalars("overall/ci95_low")[0].value == pytest.approx(overall["ci95"][0], rel=1e-6)
    assert acc.Scalars("overall/ci95_high")[0].value == pytest.approx(overall["ci95"][1], rel=1e-6)
    for key, s in results["per_task"].items():
        assert acc.Scalars(f"task/{key}/success_rate")[0].value == pytest.approx(s["success_rate"])
        assert acc.Scalars(f"task/{key}/episodes")[0].value == s["episodes"]
    assert "policy/latency_ms_mean" in scalars
    config_text = acc.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert '"id": "vla_gym/RobosuiteLift-v1"' in config_text and '"max_steps": 5' in config_text
    images = acc.Tags()["images"]
    assert sorted(images) == sorted(f"video/{r['task']}/{Path(r['video']).stem}" for r in records)
    from PIL import Image
    import io

    gif = Image.open(io.BytesIO(acc.Images(images[0])[0].encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames > 1


# ----------------------------------------------------------------------------------- W&B
def _wandb_records(path: Path) -> list:
    """The protobuf records of a ``run-<id>.wandb`` file (LevelDB log format behind a 7-byte W&B header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a header: skipped by the writer
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
        elif kind == 0:
            buf = b""
    return out


def _read_wandb_run(run_file: Path) -> dict:
    """history rows, final summary, config, run record and logged artifacts of an offline run."""
    history, summary, config, run, artifacts = [], {}, {}, None, []
    for rec in _wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            for u in rec.summary.update:
                summary["/".join(u.nested_key) or u.key] = json.loads(u.value_json)
        elif kind == "run":
            run = rec.run
            config.update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "artifact":
            artifacts.append(rec.artifact)
    return {"history": history, "summary": summary, "config": config, "run": run, "artifacts": artifacts}


def _offline_runs(root: Path) -> list[Path]:
    return sorted(root.glob("**/offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)


def _check_table(artifacts: list, run_dir: Path, records: list[dict]) -> None:
    (art,) = [a for a in artifacts if a.type == "run_table"]
    files = {c.path: c for c in art.manifest.contents}
    (table_file,) = [c for p, c in files.items() if p.endswith(".table.json")]
    table = json.loads(Path(table_file.local_path).read_text())
    assert table["columns"] == ["task", "episode", "outcome", "instruction", "steps", "video"]
    rows = table["data"]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        (e["task"], e["episode_index"], "success" if e["success"] else "failure", e["instruction"], e["steps"])
        for e in records]
    for row, rec in zip(rows, records):
        assert row[5]["_type"] == "video-file"
        entry = files[row[5]["path"]]
        md5 = base64.b64encode(hashlib.md5((run_dir / rec["video"]).read_bytes()).digest()).decode()
        assert entry.digest == md5  # the logged video is the run's own mp4, byte for byte


def test_wandb_offline_run_holds_the_results(run_dir: Path, wandb_env: dict) -> None:
    before = (run_dir / "episodes.jsonl").read_bytes()
    # resume into the same dir: no episode runs again (the tracker is not fingerprinted), the hook logs
    results = vla_gym.evaluate(output_dir=run_dir, overrides=["tracker=wandb", "tracker.project=vla_gym_test"], **LIFT)
    assert (run_dir / "episodes.jsonl").read_bytes() == before
    (run_file,) = _offline_runs(Path(wandb_env["WANDB_DIR"]))
    got = _read_wandb_run(run_file)
    records = _records(run_dir)
    rows = [h for h in got["history"] if "episode/success" in h]
    assert [h["episode/success"] for h in rows] == [float(r["success"]) for r in records]
    assert [h["episode/latency_ms_mean"] for h in rows] == pytest.approx([r["latency_ms_mean"] for r in records])
    assert [h["episode/index"] for h in rows] == [0, 1]
    overall = results["overall"]
    assert results == _results(run_dir)
    assert got["summary"]["overall/success_rate"] == pytest.approx(overall["success_rate"])
    assert [got["summary"]["overall/ci95_low"], got["summary"]["overall/ci95_high"]] == pytest.approx(overall["ci95"])
    for key, s in results["per_task"].items():
        assert got["summary"][f"task/{key}/success_rate"] == pytest.approx(s["success_rate"])
    assert got["config"]["env"]["id"] == "vla_gym/RobosuiteLift-v1" and got["config"]["max_steps"] == 5
    assert got["run"].project == "vla_gym_test" and got["run"].display_name == run_dir.name
    assert got["run"].job_type == "eval"
    _check_table(got["artifacts"], run_dir, records)


def test_evaluate_logs_into_an_existing_wandb_run(run_dir: Path, wandb_env: dict) -> None:
    train = wandb.init(project="training", mode="offline", dir=wandb_env["WANDB_DIR"], reinit="create_new")
    train.log({"train/loss": 1.0}, step=100)
    results = vla_gym.evaluate(output_dir=run_dir, wandb_run=train, wandb_step=200, **LIFT)
    train.log({"train/loss": 0.5}, step=300)  # the training run goes on: evaluate() did not finish it
    train.finish()
    got = _read_wandb_run(_offline_runs(Path(wandb_env["WANDB_DIR"]))[-1])
    assert got["run"].project == "training"
    (row,) = [h for h in got["history"] if "eval/overall/success_rate" in h]
    assert row["_step"] == 200 and row["eval/overall/success_rate"] == pytest.approx(results["overall"]["success_rate"])
    assert [h["_step"] for h in got["history"] if "train/loss" in h] == [100, 300]
    assert got["config"]["vla_gym_eval"]["env"]["id"] == "vla_gym/RobosuiteLift-v1"
    _check_table(got["artifacts"], run_dir, _records(run_dir))


@pytest.mark.parametrize("overrides", [["tracker=tensorboard", "tracker.log_dir=NOTADIR"],
                                       ["tracker=wandb", "tracker.mode=bogus"]])
def test_a_failing_tracker_changes_nothing(run_dir: Path, wandb_env: dict, overrides: list[str], caplog) -> None:
    blocker = run_dir.parent / "a_file"
    blocker.write_text("not a directory")
    overrides = [o.replace("NOTADIR", str(blocker / "tb")) for o in overrides]
    files = {p: p.read_bytes() for p in (run_dir / "episodes.jsonl", run_dir / "run.json")}
    with caplog.at_level(logging.WARNING, logger="vla_gym.trackers"):
        results = vla_gym.evaluate(output_dir=run_dir, overrides=overrides, **LIFT)
    assert "failed; the run's files are complete and unchanged" in caplog.text
    assert results == _results(run_dir) and results["overall"]["episodes"] == 2
    assert all(p.read_bytes() == b for p, b in files.items())


def test_shards_of_one_sweep_log_to_one_group(tmp_path: Path, wandb_env: dict) -> None:
    sweep = tmp_path / "sweep"
    wandb_dir = tmp_path / "wandb"
    r = subprocess.run([sys.executable, "-m", "vla_gym.rollout", "-m", "env=robosuite_lift", "policy=random",
                        "episodes_per_task=2", "max_steps=2", "video.enabled=false", "tracker=wandb",
                        "shard=0/2,1/2", f"hydra.sweep.dir={sweep}"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_DIR": str(wandb_dir)})
    assert r.returncode == 0, r.stderr[-2000:]
    runs = [_read_wandb_run(f)["run"] for f in _offline_runs(wandb_dir)]
    assert len(runs) == 2 and runs[0].run_group == runs[1].run_group and runs[0].run_group.startswith("shards-")
    fingerprint = json.loads(next(sweep.glob("0_*/run.json")).read_text())["config_fingerprint"]
    assert runs[0].run_group == f"shards-{fingerprint[:12]}"
    assert sorted(r.display_name for r in runs) == sorted(p.name for p in sweep.glob("*_*") if p.is_dir())


def test_a_sweep_groups_its_jobs_by_the_sweep_dir(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from vla_gym.config import CONFIG_MODULE, register_configs
    from vla_gym.trackers import run_naming

    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("rollout", overrides=["tracker=wandb", f"hydra.sweep.dir={tmp_path}/sweep"],
                      return_hydra_config=True)
    assert run_naming(cfg, tmp_path / "sweep/0_seed=1", "f" * 64) == ("0_seed=1", None)  # not a sweep
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        assert run_naming(cfg, tmp_path / "sweep/1_seed=2", "f" * 64) == ("1_seed=2", f"{tmp_path}/sweep")
        cfg.shard = "1/2"  # shards of one run group by fingerprint, even inside a sweep
        assert run_naming(cfg, tmp_path / "sweep/1_seed=2", "ab" * 32)[1] == "shards-" + ("ab" * 32)[:12]
        cfg.tracker.group = "mine"
        assert run_naming(cfg, tmp_path / "x", None)[1] == "mine"
    finally:
        HydraConfig.instance().cfg = None
