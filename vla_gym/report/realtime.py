"""Real-time evaluation in the report: trajectory metrics vs latency and blocking vs async (issue 21).

Works on the suite-level rows (:class:`~vla_gym.report.tables.Row`), which are grouped by execution
timing and latency as well as policy and perturbation, so a latency sweep
(``experiment=latency_sweep``) gives one row per cell. Latency 0 of ``blocking`` / ``async`` equals
``synchronous``, so those cells are the frozen-world reference.
"""

from __future__ import annotations

from vla_gym.report.tables import METRICS, Row, md_cell

SIDE_BY_SIDE = ("success", "completion_time_s", "jerk_rms", "action_smoothness", "idle_fraction", "hold_steps",
                "stale_skipped")
"""What the sync-vs-async table compares."""


def timed(rows: list[Row]) -> bool:
    """Whether any row comes from a timed (blocking / async) run."""
    return any(r.timing != "synchronous" for r in rows)


def fmt(value: float | None) -> str:
    """A metric value with 3 significant digits ("–" where undefined)."""
    return "–" if value is None else f"{value:.3g}"


def value(row: Row, name: str) -> float | None:
    """``success`` (the rate) or a metric mean of ``row``."""
    return row.success_rate if name == "success" else row.metric(name)


def metrics_markdown(rows: list[Row]) -> str:
    """Success and the mean of every trajectory metric per policy × suite × condition × timing × latency."""
    shown = [m for m in METRICS if any(r.metric(m) is not None for r in rows)]
    header = ["policy", "suite", "condition", "timing", "latency ms", "n", "success", *shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        cells = [r.policy, r.suite, r.condition, r.timing, f"{r.latency_ms:g}", str(r.episodes),
                 f"{100 * r.success_rate:.1f}%", *(fmt(r.metric(m)) for m in shown)]
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def sync_async_markdown(rows: list[Row]) -> str:
    """One line per policy × suite × condition × latency: each compared quantity for synchronous,
    blocking and async side by side (``–`` where that timing was not run at that latency)."""
    cells: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        base = r.timing.split("/")[0]
        cells.setdefault((r.policy, r.suite, r.condition, r.latency_ms), {})[base] = r
    timings = [t for t in ("synchronous", "blocking", "async") if any(t in c for c in cells.values())]
    header = ["policy", "suite", "condition", "latency ms"] + [f"{q} ({t})" for q in SIDE_BY_SIDE for t in timings]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for (policy, suite, cond, latency), by_timing in sorted(cells.items()):
        out = [policy, suite, cond, f"{latency:g}"]
        for q in SIDE_BY_SIDE:
            for t in timings:
                r = by_timing.get(t)
                out.append("–" if r is None else f"{100 * r.success_rate:.0f}%" if q == "success" else fmt(value(r, q)))
        lines.append("| " + " | ".join(md_cell(c) for c in out) + " |")
    return "\n".join(lines) + "\n"


def series(rows: list[Row]) -> dict[tuple[str, str, str, str], list[Row]]:
    """Rows of each curve (policy, suite, condition, timing), by latency: what the plots draw."""
    out: dict[tuple[str, str, str, str], list[Row]] = {}
    for r in rows:
        out.setdefault((r.policy, r.suite, r.condition, r.timing), []).append(r)
    return {k: sorted(v, key=lambda r: r.latency_ms) for k, v in sorted(out.items())}
