"""``python -m vla_gym.report <run dirs...> [--out DIR] [--real real.csv]``.

Writes ``report.md``, ``summary.csv`` (suite- and task-level rows), ``plots/*.png`` and
``index.html`` (tables, plots, sim↔real metrics, filterable video gallery) into ``--out``, and
prints the suite-level table.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vla_gym.report.load import ReportInputError, all_episodes, load_runs
from vla_gym.report.sim_real import SIM_CONDITIONS, compare, read_real_csv
from vla_gym.report.tables import success_rows, to_csv, to_text
from vla_gym.results import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m vla_gym.report",
        description="Tables, plots, a video gallery and sim↔real metrics from vla_gym rollout runs.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="run directories (holding episodes.jsonl) or parents of them, e.g. a Hydra multirun dir; "
        "searched recursively",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default: <common parent of PATHs>/report)"
    )
    p.add_argument(
        "--real",
        type=Path,
        default=None,
        metavar="CSV",
        help="real-robot success rates, columns policy,task,real_success (0.8 or 80%%)",
    )
    p.add_argument(
        "--sim-condition",
        choices=SIM_CONDITIONS,
        default="none",
        help="sim episodes compared with --real: 'none' = unperturbed only (default), "
        "'all' = pool every perturbation (SimplerEnv variant aggregation)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def default_out_dir(paths: Sequence[str]) -> Path:
    """``<common parent>/report``: next to the runs, where one would look for it."""
    resolved = [Path(p).resolve() for p in paths]
    base = Path(os.path.commonpath(resolved)) if resolved else Path.cwd()
    if base.is_file():
        base = base.parent
    return base / "report"


def run(args: argparse.Namespace) -> Path:
    """Produce every output; returns the output directory."""
    runs = load_runs(args.paths)
    out_dir: Path = (args.out or default_out_dir(args.paths)).resolve()
    episodes = all_episodes(runs)
    real = read_real_csv(args.real) if args.real else None  # fail on a bad CSV before writing anything
    sim_real = compare(episodes, real, args.sim_condition) if real is not None else None

    suite_rows = success_rows(episodes, by_task=False)
    task_rows = success_rows(episodes, by_task=True)
    notes: list[str] = []
    if not any(r.perturbation != "none" for r in suite_rows):
        notes.append("No perturbed runs: no success-vs-strength plot.")
    if sim_real is not None and sim_real.unmatched_real:
        notes.append(f"{len(sim_real.unmatched_real)} real-CSV row(s) match no sim run; see Sim ↔ real.")

    plots: list[Path] = []
    if not args.no_plots:
        try:  # imported here: matplotlib is slow to import and lives in the optional `report` extra
            from vla_gym.report.plots import plot_latency_curves, plot_per_task, plot_strength_curves
        except ImportError as e:
            raise ReportInputError(
                f"plots need matplotlib ({e}); install it with `pip install 'vla_gym[report]'` "
                "or pass --no-plots"
            ) from e

        plots = (plot_strength_curves(suite_rows, out_dir / "plots")
                 + plot_latency_curves(suite_rows, out_dir / "plots")
                 + plot_per_task(task_rows, out_dir / "plots"))

    from vla_gym.report.gallery import render_index
    from vla_gym.report.markdown import render_markdown

    run_dirs = [r.path for r in runs]
    atomic_write_text(out_dir / "summary.csv", to_csv(suite_rows + task_rows))
    atomic_write_text(
        out_dir / "report.md",
        render_markdown(
            run_dirs=run_dirs,
            out_dir=out_dir,
            suite_rows=suite_rows,
            task_rows=task_rows,
            plots=plots,
            sim_real=sim_real,
            notes=notes,
        ),
    )
    atomic_write_text(
        out_dir / "index.html",
        render_index(
            episodes=episodes,
            out_dir=out_dir,
            suite_rows=suite_rows,
            plots=plots,
            sim_real=sim_real,
            notes=notes,
        ),
    )

    print(f"{len(runs)} run(s), {len(episodes)} episode(s)\n")
    print(to_text(suite_rows))
    if sim_real is not None:
        from vla_gym.report.sim_real import fmt_metric

        a = sim_real.pooled
        print(
            f"sim<->real ({a.scope}, n={a.n}): Pearson r={fmt_metric(a.pearson)} MMRV={fmt_metric(a.mmrv)}"
            + (f"  ({a.note})" if a.note else "")
        )
    print(
        f"wrote {out_dir}/report.md, summary.csv, index.html"
        + (f", {len(plots)} plot(s) in plots/" if plots else "")
    )
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns a process exit status (2 on bad input, with the reason on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args)
    except ReportInputError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0
