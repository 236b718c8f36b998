"""Experiment trackers: a finished run's results where researchers already look.

``tracker=none|wandb|tensorboard`` (Hydra group ``conf/tracker/``, default ``none``). A tracker
runs **after** the run directory is complete: it reads the episode records and the aggregate that
``results.json`` holds and logs copies of them, so it cannot lose or change a record, and any
failure (a missing package, no network, a full disk) is one warning line, never a failed run.

What every tracker logs (:class:`RunSummary`): per-episode success, steps, return and policy
latency; per-task, per-suite and overall success with their Wilson 95% intervals; the resolved
config; and the episode videos with task, outcome and instruction.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("vla_gym.trackers")

TRACKERS = ("none", "wandb", "tensorboard")

__all__ = ["TRACKERS", "RunSummary", "Tracker", "make_tracker", "run_naming", "summarize_run", "track_run"]


@dataclass
class RunSummary:
    """What a tracker logs, computed once from the run's records and ``results.json``."""

    run_dir: Path
    name: str
    group: str | None
    config: dict[str, Any]
    episodes: list[dict[str, Any]]
    """One dict per record (the :class:`~vla_gym.results.EpisodeRecord` fields), in the store's order."""
    results: dict[str, Any]
    """The ``results.json`` dict, as written."""
    scalars: dict[str, float] = field(default_factory=dict)
    """Run-level numbers: ``overall/*``, ``task/<suite>/<task>/*``, ``suite/<suite>/*``, ``policy/latency_ms_*``."""

    def videos(self) -> list[tuple[dict[str, Any], Path]]:
        """(record, absolute video path) of every episode whose video exists on disk."""
        out = []
        for ep in self.episodes:
            if ep.get("video") and (self.run_dir / ep["video"]).is_file():
                out.append((ep, self.run_dir / ep["video"]))
        return out


EPISODE_METRICS = ("success", "steps", "sum_reward", "latency_ms_mean", "latency_ms_p95", "wall_s")
SUMMARY_METRICS = ("success_rate", "ci95_low", "ci95_high", "episodes", "successes", "errors", "mean_steps")


def _summary_scalars(prefix: str, s: dict[str, Any]) -> dict[str, float]:
    lo, hi = s.get("ci95", [math.nan, math.nan])
    values = {"success_rate": s.get("success_rate"), "ci95_low": lo, "ci95_high": hi, "episodes": s.get("episodes"),
              "successes": s.get("successes"), "errors": s.get("errors"), "mean_steps": s.get("mean_steps")}
    return {f"{prefix}/{k}": float(v) for k, v in values.items() if v is not None}


def summarize_run(run_dir: Path, results: dict[str, Any], records: list[Any], config: dict[str, Any],
                  name: str, group: str | None) -> RunSummary:
    """Collect what a tracker logs: plain copies of ``records`` and the ``results`` numbers."""
    episodes = [asdict(r) if not isinstance(r, dict) else dict(r) for r in records]
    scalars = _summary_scalars("overall", results.get("overall", {}))
    for key, s in results.get("per_task", {}).items():
        scalars.update(_summary_scalars(f"task/{key}", s))
    for key, s in results.get("per_group", {}).items():
        scalars.update(_summary_scalars(f"suite/{key}", s))
    lat = [float(e["latency_ms_mean"]) for e in episodes if e.get("error") is None and e.get("latency_ms_mean")]
    if lat:
        scalars["policy/latency_ms_mean"] = sum(lat) / len(lat)
        scalars["policy/latency_ms_p95_max"] = max(float(e.get("latency_ms_p95") or 0.0) for e in episodes)
    return RunSummary(Path(run_dir), name, group, config, episodes, results, scalars)


def episode_scalars(ep: dict[str, Any]) -> dict[str, float]:
    """The per-episode numbers, as ``episode/<metric>`` (``success`` as 0/1, ``error`` as 0/1)."""
    out = {f"episode/{k}": float(ep.get(k) or 0.0) for k in EPISODE_METRICS}
    out["episode/error"] = float(ep.get("error") is not None)
    return out


class Tracker(Protocol):
    """A sink for one finished run; implementations live in ``vla_gym.trackers.<name>``."""

    def log_run(self, summary: RunSummary) -> None:
        """Log everything in ``summary`` (the tracker opens and closes what it needs)."""


def run_naming(cfg: Any, run_dir: Path, fingerprint: str | None) -> tuple[str, str | None]:
    """(run name, group) for trackers.

    A sweep logs one run per job, grouped by the sweep directory; the shards of one run
    (``shard=i/n``, same config fingerprint) share one group, whatever launched them.
    ``tracker.group`` overrides both.
    """
    tcfg = _get(cfg, "tracker") or {}
    name = f"{_get(tcfg, 'name_prefix') or ''}{Path(run_dir).name}"
    group = _get(tcfg, "group")
    if group:
        return name, str(group)
    if _get(cfg, "shard"):
        return name, f"shards-{(fingerprint or 'run')[:12]}"
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return name, str(HydraConfig.get().sweep.dir)
    except Exception:  # noqa: BLE001 - outside Hydra (evaluate()): no sweep, no group
        pass
    return name, None


def _get(node: Any, key: str) -> Any:
    if node is None:
        return None
    try:
        return node.get(key)
    except AttributeError:
        return getattr(node, key, None)


def make_tracker(tracker_cfg: Any, *, wandb_run: Any = None, wandb_step: int | None = None) -> Tracker | None:
    """The tracker ``tracker_cfg`` names (``None`` for ``none``); raises ``ValueError`` for an unknown name."""
    name = str(_get(tracker_cfg, "name") or "none") if tracker_cfg is not None else "none"
    if wandb_run is not None:
        from vla_gym.trackers.wandb import WandbTracker

        return WandbTracker(tracker_cfg, run=wandb_run, step=wandb_step)
    if name == "none":
        return None
    if name == "wandb":
        from vla_gym.trackers.wandb import WandbTracker

        return WandbTracker(tracker_cfg)
    if name == "tensorboard":
        from vla_gym.trackers.tensorboard import TensorBoardTracker

        return TensorBoardTracker(tracker_cfg)
    raise ValueError(f"unknown tracker {name!r}; valid: {', '.join(TRACKERS)}")


def track_run(cfg: Any, run_dir: Path, results: dict[str, Any], records: list[Any], *,
              fingerprint: str | None = None, wandb_run: Any = None, wandb_step: int | None = None) -> bool:
    """Log a finished run to ``cfg.tracker`` (and/or an existing W&B run); never raises.

    Called after ``results.json`` is written. Returns whether anything was logged. A failure is
    logged as one warning: the run directory is the record of the run, the tracker a copy.
    """
    tcfg = _get(cfg, "tracker")
    if wandb_run is None and str(_get(tcfg, "name") or "none") == "none":
        return False
    try:
        from omegaconf import OmegaConf

        tracker = make_tracker(tcfg, wandb_run=wandb_run, wandb_step=wandb_step)
        if tracker is None:
            return False
        plain = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
        name, group = run_naming(cfg, run_dir, fingerprint)
        tracker.log_run(summarize_run(Path(run_dir), results, list(records), plain, name, group))
        return True
    except Exception as e:  # noqa: BLE001 - a tracker must never fail (or change) the run it reports
        log.warning("tracker %s failed; the run's files are complete and unchanged: %s: %s",
                    _get(tcfg, "name") or "wandb", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        log.debug("tracker failure", exc_info=True)
        return False
