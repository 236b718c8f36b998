"""What every tracker logs, computed once from a finished run (shared by the tracker modules)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def get_key(node: Any, key: str) -> Any:
    """``node[key]`` for a dict or DictConfig, ``node.key`` for an object, None when absent."""
    if node is None:
        return None
    try:
        return node.get(key)
    except AttributeError:
        return getattr(node, key, None)


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
