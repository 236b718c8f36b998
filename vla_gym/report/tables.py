"""Success rates with Wilson 95% intervals per policy × suite × perturbation/strength (× task).

Rows are computed once here and rendered as CSV, markdown and plain text, so every output
shows the same numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, fields

from vla_gym.report.load import UNPERTURBED, Episode
from vla_gym.results import summarize


@dataclass(frozen=True)
class Row:
    """Summary of one group of episodes. ``task`` is ``""`` for a suite-level row."""

    level: str
    policy: str
    suite: str
    perturbation: str
    strength: float
    task: str
    episodes: int
    successes: int
    errors: int
    success_rate: float
    ci_low: float
    ci_high: float
    mean_steps: float
    timing: str = "synchronous"
    latency_ms: float = 0.0
    metrics: tuple[tuple[str, float | None], ...] = ()
    """Mean of each trajectory metric (:data:`METRICS`) over the group's finished episodes."""

    def metric(self, name: str) -> float | None:
        """The group's mean of metric ``name`` (None where no episode defines it)."""
        return dict(self.metrics).get(name)

    @property
    def condition(self) -> str:
        """Perturbation and strength as one label, e.g. ``camera@0.5`` or ``none``."""
        return condition_label(self.perturbation, self.strength)


def condition_label(perturbation: str, strength: float) -> str:
    """``none`` for unperturbed episodes, ``name@strength`` otherwise."""
    if perturbation == UNPERTURBED and strength == 0:
        return UNPERTURBED
    return f"{perturbation}@{strength:g}"


METRICS = ("completion_time_s", "path_length_m", "path_efficiency", "jerk_rms", "action_smoothness",
           "chunk_boundary_jump_mean", "oscillation_per_s", "idle_fraction", "actuator_effort", "queries",
           "latency_ms_mean", "hold_steps", "stale_skipped")
"""Trajectory-quality and inference metrics the report shows (definitions: docs/how-to/real-time.md)."""


def _sort_key(pert: str, strength: float) -> tuple[int, str, float]:
    """Unperturbed first, then perturbations by name and strength."""
    return (pert != UNPERTURBED, pert, strength)


def success_rows(episodes: Iterable[Episode], by_task: bool) -> list[Row]:
    """Group episodes and summarize each group; per task when ``by_task``."""
    groups: dict[tuple, list[Episode]] = {}
    task_order: dict[str, tuple[int, str]] = {}
    for e in episodes:
        r = e.record
        task = r.task if by_task else ""
        groups.setdefault((e.policy, r.suite, r.perturbation, e.strength, task, e.timing, e.latency_ms),
                          []).append(e)
        task_order.setdefault(f"{r.suite}/{r.task}", (r.task_index, r.task))
    rows = []
    for (policy, suite, pert, strength, task, timing, latency), eps in groups.items():
        s = summarize(e.record for e in eps)
        spread = s.get("metrics", {})
        rows.append(
            Row(
                level="task" if by_task else "suite",
                policy=policy,
                suite=suite,
                perturbation=pert,
                strength=strength,
                task=task,
                episodes=s["episodes"],
                successes=s["successes"],
                errors=s["errors"],
                success_rate=s["success_rate"],
                ci_low=s["ci95"][0],
                ci_high=s["ci95"][1],
                mean_steps=s["mean_steps"],
                timing=timing,
                latency_ms=latency,
                metrics=tuple((m, spread[m]["mean"] if m in spread else None) for m in METRICS),
            )
        )
    rows.sort(
        key=lambda x: (
            x.policy,
            x.suite,
            *_sort_key(x.perturbation, x.strength),
            x.timing != "synchronous",
            x.timing,
            x.latency_ms,
            task_order.get(f"{x.suite}/{x.task}", (-1, "")) if x.task else (-1, ""),
        )
    )
    return rows


def to_csv(rows: Iterable[Row]) -> str:
    """CSV with one header line; rates as fractions in [0, 1]."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = [f.name for f in fields(Row) if f.name != "metrics"]
    w.writerow(names + list(METRICS))
    for r in rows:
        values = [getattr(r, n) for n in names] + [r.metric(m) for m in METRICS]
        w.writerow(["" if v is None else f"{v:.6g}" if isinstance(v, float) else v for v in values])
    return buf.getvalue()


def md_cell(text: object) -> str:
    """Make ``text`` safe inside a markdown table cell.

    ``<`` is backslash-escaped too: names come from shared run directories, and markdown
    viewers that pass raw HTML through would otherwise render (and run) markup in them.
    """
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def _table_cells(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells shared by the markdown and text renderings."""
    by_task = any(r.task for r in rows)
    timed = any(r.timing != "synchronous" for r in rows)  # the timing columns only where a run was timed
    header = (
        ["policy", "suite", "perturbation", "strength"]
        + (["timing", "latency ms"] if timed else [])
        + (["task"] if by_task else [])
        + ["success", "95% CI", "n", "errors", "mean steps"]
    )
    body = []
    for r in rows:
        body.append(
            [r.policy, r.suite, r.perturbation, f"{r.strength:g}"]
            + ([r.timing, f"{r.latency_ms:g}"] if timed else [])
            + ([r.task] if by_task else [])
            + [
                f"{100 * r.success_rate:.1f}%",
                f"[{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]",
                str(r.episodes),
                str(r.errors),
                f"{r.mean_steps:.1f}",
            ]
        )
    return header, body


def to_markdown(rows: list[Row]) -> str:
    """A GitHub-flavoured markdown table."""
    header, body = _table_cells(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def to_text(rows: list[Row]) -> str:
    """Aligned plain-text table for the terminal."""
    header, body = _table_cells(rows)
    widths = [max(len(c) for c in col) for col in zip(header, *body)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]) + "\n"
