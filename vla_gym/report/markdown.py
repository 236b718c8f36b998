"""``report.md``: the tables, plot links and sim↔real metrics as one markdown file."""

from __future__ import annotations

import os
from pathlib import Path

from vla_gym.report.sim_real import SimReal, fmt_metric
from vla_gym.report.tables import Row, md_cell, to_markdown


def _rel(path: Path, out_dir: Path) -> str:
    """``path`` relative to the report dir, with forward slashes (markdown links)."""
    return Path(os.path.relpath(path, out_dir)).as_posix()


def sim_real_markdown(sr: SimReal) -> str:
    """Metric table, the pairs behind it, and real rows that matched no sim run."""
    cond = "unperturbed sim episodes" if sr.condition == "none" else "all sim episodes (variant aggregation)"
    lines = [
        f"Sim rates from {cond}. Pearson r: higher is better; MMRV: lower is better (0 = same ranking).",
        "",
        "| scope | n | Pearson r | MMRV | note |",
        "|---|---|---|---|---|",
    ]
    for a in [sr.pooled, *sr.per_task]:
        lines.append(
            f"| {md_cell(a.scope)} | {a.n} | {fmt_metric(a.pearson)} | {fmt_metric(a.mmrv)} | "
            f"{md_cell(a.note)} |"
        )
    lines += ["", "| policy | task | sim | real | sim episodes |", "|---|---|---|---|---|"]
    for p in sr.pairs:
        lines.append(
            f"| {md_cell(p.policy)} | {md_cell(p.task)} | {p.sim:.3f} | {p.real:.3f} | {p.episodes} |"
        )
    if sr.unmatched_real:
        lines += [
            "",
            "Real rows without sim episodes (ignored): "
            + ", ".join(f"{md_cell(p)} / {md_cell(t)}" for p, t in sr.unmatched_real),
        ]
    return "\n".join(lines) + "\n"


def render_markdown(
    *,
    run_dirs: list[Path],
    out_dir: Path,
    suite_rows: list[Row],
    task_rows: list[Row],
    plots: list[Path],
    sim_real: SimReal | None,
    notes: list[str],
) -> str:
    """Assemble ``report.md``; ``notes`` are caveats worth reading before the numbers."""
    intro = (
        f"{len(run_dirs)} run(s), {sum(r.episodes for r in suite_rows)} episode(s). "
        "Success rates with Wilson 95% intervals; crashed episodes count as failures "
        "(see the errors column)."
    )
    parts = ["# vla_gym report", "", intro, ""]
    parts += ["Runs: " + ", ".join(f"`{_rel(d, out_dir)}`" for d in run_dirs), ""]
    if notes:
        parts += [f"- {n}" for n in notes] + [""]
    parts += ["## Success by policy × suite × perturbation", "", to_markdown(suite_rows)]
    if plots:
        parts += ["## Plots", ""] + [f"![{p.stem}]({_rel(p, out_dir)})" for p in plots] + [""]
    if any(r.metrics and any(v is not None for _, v in r.metrics) for r in suite_rows):
        from vla_gym.report.realtime import metrics_markdown, sync_async_markdown, timed

        parts += ["## Trajectory quality (means; definitions in docs/how-to/real-time.md)", "",
                  metrics_markdown(suite_rows)]
        if timed(suite_rows):
            parts += ["## Synchronous vs blocking vs async", "", sync_async_markdown(suite_rows)]
    if sim_real is not None:
        parts += ["## Sim ↔ real", "", sim_real_markdown(sim_real)]
    parts += ["## Per task", "", to_markdown(task_rows)]
    parts += ["Video gallery: [index.html](index.html)", ""]
    return "\n".join(parts)
