"""PNG plots: success vs perturbation strength (one per perturbation) and per-task bars.

Uses matplotlib's object API with the Agg canvas, never pyplot, so it needs no display and
leaves no global figure state behind.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vla_gym.results import atomic_write_bytes
from vla_gym.report.load import UNPERTURBED
from vla_gym.report.tables import Row


def _slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _plain(text: str) -> str:
    """``text`` shown literally: names come from run directories, and ``$...$`` would be parsed
    as mathtext (a bad expression aborts the whole report)."""
    return text.replace("$", r"\$")


def _save(fig: Figure, path: Path) -> Path:
    """Render ``fig`` as PNG and write it atomically."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _yerr(rows: list[Row]) -> list[list[float]]:
    """Asymmetric Wilson error bars as matplotlib wants them."""
    # clamped: at 0/n or n/n the bound equals the rate up to float rounding, and matplotlib refuses -1e-16
    return [[max(0.0, r.success_rate - r.ci_low) for r in rows], [max(0.0, r.ci_high - r.success_rate) for r in rows]]


def plot_strength_curves(suite_rows: list[Row], out_dir: Path) -> list[Path]:
    """One PNG per perturbation: success vs strength, a line per policy (and suite).

    The unperturbed runs of the same policy and suite are drawn at strength 0 when the sweep
    itself has no strength-0 point, so every curve starts from its baseline.
    """
    perturbations = sorted({r.perturbation for r in suite_rows if r.perturbation != UNPERTURBED})
    suites = {r.suite for r in suite_rows}
    baseline = {
        (r.policy, r.suite): r for r in suite_rows if r.perturbation == UNPERTURBED and r.strength == 0
    }
    paths: list[Path] = []
    for pert in perturbations:
        series: dict[tuple[str, str], list[Row]] = {}
        for r in suite_rows:
            if r.perturbation == pert:
                series.setdefault((r.policy, r.suite), []).append(r)
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.add_subplot()
        xs_all = sorted({r.strength for rs in series.values() for r in rs} | {0.0})
        span = (xs_all[-1] - xs_all[0]) or 1.0
        for i, ((policy, suite), rs) in enumerate(sorted(series.items())):
            if (policy, suite) in baseline and not any(r.strength == 0 for r in rs):
                rs = [baseline[(policy, suite)]] + rs
            rs = sorted(rs, key=lambda r: r.strength)
            dodge = (i - (len(series) - 1) / 2) * 0.008 * span  # keep error bars apart
            label = _plain(policy if len(suites) == 1 else f"{policy} ({suite})")
            ax.errorbar(
                [r.strength + dodge for r in rs],
                [r.success_rate for r in rs],
                yerr=_yerr(rs),
                marker="o",
                capsize=3,
                label=label,
            )
        ax.set_xlabel(_plain(f"{pert} strength"))
        ax.set_ylabel("success rate (Wilson 95% CI)")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(_plain(f"Success vs {pert} strength"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        paths.append(_save(fig, out_dir / f"success_vs_strength_{_slug(pert)}.png"))
    return paths


def plot_per_task(task_rows: list[Row], out_dir: Path) -> list[Path]:
    """One PNG per suite: horizontal bars of per-task success, a bar per policy.

    Uses the unperturbed episodes when the suite has any; otherwise pools all conditions and
    says so in the title.
    """
    paths: list[Path] = []
    for suite in sorted({r.suite for r in task_rows}):
        rows = [r for r in task_rows if r.suite == suite]
        clean = [r for r in rows if r.perturbation == UNPERTURBED and r.strength == 0]
        title = f"{suite}: per-task success (unperturbed)"
        if clean:
            rows = clean
        else:
            title = f"{suite}: per-task success (all conditions, pooled per row)"
        tasks = list(dict.fromkeys(r.task for r in rows))
        series = sorted({(r.policy, r.condition, r.timing, r.latency_ms) for r in rows})
        height = 0.8 / max(1, len(series))
        fig = Figure(figsize=(8.0, 1.5 + len(tasks) * (0.25 + 0.12 * len(series))))
        ax = fig.add_subplot()
        for i, (policy, cond, timing, latency) in enumerate(series):
            by_task = {r.task: r for r in rows if (r.policy, r.condition, r.timing, r.latency_ms)
                       == (policy, cond, timing, latency)}
            ys = [t_i + (i - (len(series) - 1) / 2) * height for t_i, t in enumerate(tasks) if t in by_task]
            rs = [by_task[t] for t in tasks if t in by_task]
            label = _plain(policy if clean else f"{policy} {cond}")
            if timing != "synchronous":
                label += _plain(f" {timing} {latency:g} ms")
            ax.barh(ys, [r.success_rate for r in rs], height=height, xerr=_yerr(rs), capsize=2, label=label)
        ticks = [_plain(t if len(t) <= 48 else t[:45] + "...") for t in tasks]
        ax.set_yticks(range(len(tasks)), ticks, fontsize="small")
        ax.invert_yaxis()
        ax.set_xlim(0, 1.0)
        ax.set_xlabel("success rate (Wilson 95% CI)")
        ax.set_title(_plain(title))
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize="small", loc="best")
        paths.append(_save(fig, out_dir / f"per_task_{_slug(suite)}.png"))
    return paths


def plot_latency_curves(suite_rows: list[Row], out_dir: Path) -> list[Path]:
    """Success and each trajectory metric vs simulated latency, a line per policy × timing (× suite,
    condition); synchronous runs (latency-free) as a dashed horizontal reference. Only for timed runs."""
    from vla_gym.report.realtime import series, timed, value
    from vla_gym.report.tables import METRICS

    if not timed(suite_rows):
        return []
    curves = series(suite_rows)
    paths: list[Path] = []
    for name in ("success", *METRICS):
        if not any(value(r, name) is not None for rs in curves.values() for r in rs):
            continue
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.add_subplot()
        for (policy, suite, cond, timing), rs in curves.items():
            pts = [(r.latency_ms, value(r, name)) for r in rs if value(r, name) is not None]
            if not pts:
                continue
            label = _plain(" ".join(x for x in (policy, suite if len({k[1] for k in curves}) > 1 else "",
                                                cond if cond != UNPERTURBED else "", timing) if x))
            if timing == "synchronous":
                ax.axhline(pts[0][1], linestyle="--", alpha=0.7, label=label)
            else:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xlabel("simulated latency (ms)")
        ax.set_ylabel("success rate" if name == "success" else _plain(name))
        ax.set_title(_plain(f"{name} vs latency"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        paths.append(_save(fig, out_dir / f"latency_{_slug(name)}.png"))
    return paths
