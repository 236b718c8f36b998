"""``tracker=wandb``: a finished run in Weights & Biases, online or as an offline run dir.

A run of its own (``job_type="eval"``) gets one history row per episode (``episode/*`` against
``episode/index``), run-level numbers in its summary, the resolved config, and an ``episodes``
table with one ``wandb.Video`` per recorded episode beside its task, outcome and instruction.
An existing run (``vla_gym.evaluate(..., wandb_run=run)``, e.g. the training run) gets the same
numbers under ``eval/`` in one ``run.log`` call (at ``wandb_step`` if given), so the evaluation
sits next to the training curves without advancing its step per episode; it is not finished here.
"""

from __future__ import annotations

import os
from typing import Any

from vla_gym.trackers.summary import RunSummary, episode_scalars, get_key

TABLE_COLUMNS = ["task", "episode", "outcome", "instruction", "steps", "video"]


def _outcome(ep: dict[str, Any]) -> str:
    return "error" if ep.get("error") is not None else ("success" if ep.get("success") else "failure")


class WandbTracker:
    """Logs a :class:`~vla_gym.trackers.RunSummary` to W&B (see the module docstring)."""

    def __init__(self, cfg: Any = None, run: Any = None, step: int | None = None) -> None:
        """``cfg``: the ``tracker`` config node (project, mode, dir, ...); ``run``: an existing run to log into."""
        self.cfg, self.run, self.step = cfg, run, step

    def _table(self, wandb: Any, summary: RunSummary) -> Any:
        table = wandb.Table(columns=TABLE_COLUMNS)
        videos = dict((id(ep), path) for ep, path in summary.videos()) if get_key(self.cfg, "log_videos") is not False \
            else {}
        for ep in summary.episodes:
            path = videos.get(id(ep))
            video = wandb.Video(str(path), format="mp4", caption=f"{ep['task']} ep{ep['episode_index']}: "
                                f"{_outcome(ep)}") if path else None
            table.add_data(ep["task"], int(ep["episode_index"]), _outcome(ep), ep.get("instruction", ""),
                           int(ep.get("steps") or 0), video)
        return table

    def log_run(self, summary: RunSummary) -> None:
        """Log per-episode rows, run-level numbers, the config and the episodes table."""
        import wandb

        if self.run is not None:
            run = self.run
            run.config.update({"vla_gym_eval": summary.config}, allow_val_change=True)
            data = {f"eval/{k}": v for k, v in summary.scalars.items()}
            data["eval/episodes"] = self._table(wandb, summary)
            run.log(data, step=self.step)
            return
        settings_dir = get_key(self.cfg, "dir") or os.environ.get("WANDB_DIR") or str(summary.run_dir)
        os.makedirs(settings_dir, exist_ok=True)
        run = wandb.init(
            project=get_key(self.cfg, "project") or "vla_gym", entity=get_key(self.cfg, "entity") or None,
            mode=get_key(self.cfg, "mode") or None, dir=settings_dir, name=summary.name, group=summary.group,
            job_type="eval", tags=list(get_key(self.cfg, "tags") or []), config=summary.config,
            reinit="create_new",
        )
        try:
            run.define_metric("episode/index")
            run.define_metric("episode/*", step_metric="episode/index")
            for i, ep in enumerate(summary.episodes):
                run.log({"episode/index": i, **episode_scalars(ep)})
            run.log({"episodes": self._table(wandb, summary)})
            for key, value in summary.scalars.items():
                run.summary[key] = value
        finally:
            run.finish()
