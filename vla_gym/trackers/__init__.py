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
from pathlib import Path
from typing import Any, Protocol

from vla_gym.trackers.summary import RunSummary, episode_scalars, get_key, summarize_run

log = logging.getLogger("vla_gym.trackers")

TRACKERS = ("none", "wandb", "tensorboard")

__all__ = ["TRACKERS", "RunSummary", "Tracker", "episode_scalars", "make_tracker", "run_naming", "summarize_run",
           "track_run"]


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
    tcfg = get_key(cfg, "tracker") or {}
    name = f"{get_key(tcfg, 'name_prefix') or ''}{Path(run_dir).name}"
    group = get_key(tcfg, "group")
    if group:
        return name, str(group)
    if get_key(cfg, "shard"):
        return name, f"shards-{(fingerprint or 'run')[:12]}"
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return name, str(HydraConfig.get().sweep.dir)
    except Exception:  # noqa: BLE001 - outside Hydra (evaluate()): no sweep, no group
        pass
    return name, None


def make_tracker(tracker_cfg: Any, *, wandb_run: Any = None, wandb_step: int | None = None) -> Tracker | None:
    """The tracker ``tracker_cfg`` names (``None`` for ``none``); raises ``ValueError`` for an unknown name."""
    name = str(get_key(tracker_cfg, "name") or "none") if tracker_cfg is not None else "none"
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
    tcfg = get_key(cfg, "tracker")
    if wandb_run is None and str(get_key(tcfg, "name") or "none") == "none":
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
                    get_key(tcfg, "name") or "wandb", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        log.debug("tracker failure", exc_info=True)
        return False
