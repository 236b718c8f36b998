"""Agreement between simulated and real-robot success rates: Pearson r and MMRV.

Follows SimplerEnv (Li et al., 2024): a simulator is useful for policy selection when it ranks
policies as the real robot does, which Pearson r (linear agreement) and MMRV (Mean Maximum Rank
Violation; 0 = every pair ordered as on the real robot) measure.

Real rates come from a CSV with columns ``policy,task,real_success``. ``real_success`` is a
fraction in [0, 1] (``0.8``) or a percentage with an explicit ``%`` (``80%``); a bare number
above 1 is rejected rather than guessed, since ``1`` could mean 100% or 1%.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_gym.report.load import UNPERTURBED, Episode, ReportInputError

REAL_COLUMNS = ("policy", "task", "real_success")
SIM_CONDITIONS = ("none", "all")


def pearson(sim: Sequence[float], real: Sequence[float]) -> float:
    """Pearson correlation; NaN when undefined (fewer than 2 pairs, or a constant side)."""
    x, y = np.asarray(sim, dtype=float), np.asarray(real, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"sim and real differ in length: {x.shape} vs {y.shape}")
    if x.size < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    if denom == 0.0:
        return math.nan
    return float(np.sum(dx * dy)) / denom


def mmrv(sim: Sequence[float], real: Sequence[float]) -> float:
    """Mean Maximum Rank Violation (lower is better).

    ``MMRV = (1/N) Σ_i max_j |r_i − r_j| · 1[(s_i < s_j) ≠ (r_i < r_j)]``: for each item, the
    largest real-rate gap to an item the simulator orders the other way round. Comparisons are
    strict, as written; SimplerEnv's code uses ``>``, which gives the same value without ties.
    """
    s, r = np.asarray(sim, dtype=float), np.asarray(real, dtype=float)
    if s.shape != r.shape:
        raise ValueError(f"sim and real differ in length: {s.shape} vs {r.shape}")
    if s.size == 0:
        return math.nan
    violated = (s[:, None] < s[None, :]) != (r[:, None] < r[None, :])
    gaps = np.abs(r[:, None] - r[None, :]) * violated
    return float(gaps.max(axis=1).mean())


def _parse_rate(text: str, where: str) -> float:
    """``0.8`` or ``80%`` → 0.8; anything else raises with the offending row named."""
    t = (text or "").strip()
    try:
        value = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise ReportInputError(
            f"{where}: real_success={text!r} is not a number; write e.g. 0.8 or 80%"
        ) from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        hint = " (write percentages with a % sign, e.g. 80%)" if not t.endswith("%") and value > 1 else ""
        raise ReportInputError(f"{where}: real_success={text!r} is outside [0, 1]{hint}")
    return value


def read_real_csv(path: str | os.PathLike) -> dict[tuple[str, str], float]:
    """Read real-robot success rates keyed by ``(policy, task)``.

    Raises:
        ReportInputError: missing file or columns, a bad value, or a repeated (policy, task).
    """
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f"real-robot CSV not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets add a BOM
        reader = csv.DictReader(f)
        found = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REAL_COLUMNS if c not in found]
        if missing:
            raise ReportInputError(
                f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(found) or 'no header'}. "
                f"Expected a header line: {','.join(REAL_COLUMNS)}"
            )
        reader.fieldnames = found
        rates: dict[tuple[str, str], float] = {}
        for line_no, row in enumerate(reader, start=2):
            where = f"{path}:{line_no}"
            policy, task = (row.get("policy") or "").strip(), (row.get("task") or "").strip()
            if not policy or not task:
                raise ReportInputError(f"{where}: policy and task must not be empty")
            if (policy, task) in rates:
                raise ReportInputError(f"{where}: ({policy}, {task}) appears twice")
            rates[(policy, task)] = _parse_rate(row.get("real_success", ""), where)
    if not rates:
        raise ReportInputError(f"{path}: no data rows")
    return rates


@dataclass(frozen=True)
class Pair:
    """Sim and real success of one policy on one task."""

    policy: str
    task: str
    sim: float
    real: float
    episodes: int


@dataclass(frozen=True)
class Agreement:
    """Pearson r and MMRV over a set of pairs; ``note`` explains a NaN."""

    scope: str
    n: int
    pearson: float
    mmrv: float
    note: str = ""


@dataclass
class SimReal:
    """Everything the report shows about sim↔real agreement."""

    condition: str
    pairs: list[Pair]
    per_task: list[Agreement]
    pooled: Agreement
    unmatched_real: list[tuple[str, str]]


def _agreement(scope: str, pairs: list[Pair], unit: str) -> Agreement:
    """Compute both metrics and say why Pearson is NaN when it is."""
    sim, real = [p.sim for p in pairs], [p.real for p in pairs]
    r = pearson(sim, real)
    note = ""
    if len(pairs) < 2:
        note = f"needs at least 2 {unit}"
    elif math.isnan(r):
        side = "sim" if len(set(sim)) == 1 else "real"
        note = f"Pearson undefined: all {side} rates equal"
    return Agreement(
        scope=scope, n=len(pairs), pearson=r, mmrv=mmrv(sim, real) if pairs else math.nan, note=note
    )


def _sim_rates(episodes: Iterable[Episode], condition: str) -> dict[tuple[str, str], list[bool]]:
    """Sim successes per (policy, suite/task) for the chosen condition."""
    if condition not in SIM_CONDITIONS:
        raise ReportInputError(
            f"unknown sim condition {condition!r}; choose one of {', '.join(SIM_CONDITIONS)}"
        )
    out: dict[tuple[str, str], list[bool]] = {}
    for e in episodes:
        unperturbed = e.record.perturbation == UNPERTURBED or e.strength == 0
        if condition == "none" and not unperturbed:
            continue
        out.setdefault((e.policy, e.task_id), []).append(bool(e.record.success))
    return out


def _resolve_task(policy: str, task: str, sim_tasks: dict[str, set[str]]) -> str | None:
    """Match a CSV task (``suite/task`` or bare ``task``) to a sim task id of ``policy``."""
    tasks = sim_tasks.get(policy, set())
    if task in tasks:
        return task
    hits = sorted(t for t in tasks if t.split("/", 1)[-1] == task)
    if len(hits) > 1:
        raise ReportInputError(
            f"real CSV task {task!r} matches several suites ({', '.join(hits)}); write it as suite/task"
        )
    return hits[0] if hits else None


def compare(
    episodes: Iterable[Episode], real: dict[tuple[str, str], float], condition: str = "none"
) -> SimReal:
    """Pair real rates with sim rates and compute per-task and pooled agreement.

    ``condition="none"`` uses unperturbed sim episodes only (perturbation ``none`` or strength
    0); ``"all"`` pools every condition, like SimplerEnv's variant aggregation.
    """
    sim = _sim_rates(episodes, condition)
    sim_tasks: dict[str, set[str]] = {}
    for policy, task in sim:
        sim_tasks.setdefault(policy, set()).add(task)
    pairs, unmatched = [], []
    for (policy, task), rate in sorted(real.items()):
        tid = _resolve_task(policy, task, sim_tasks)
        if tid is None:
            unmatched.append((policy, task))
            continue
        succ = sim[(policy, tid)]
        pairs.append(Pair(policy=policy, task=tid, sim=sum(succ) / len(succ), real=rate, episodes=len(succ)))
    if not pairs:
        raise ReportInputError(
            f"no row of the real CSV matches a sim (policy, task) under sim condition {condition!r}. "
            f"Sim policies: {', '.join(sorted(sim_tasks)) or 'none'}; "
            f"sim tasks: {', '.join(sorted({t for ts in sim_tasks.values() for t in ts})) or 'none'}"
        )
    by_task: dict[str, list[Pair]] = {}
    for p in pairs:
        by_task.setdefault(p.task, []).append(p)
    per_task = [_agreement(task, ps, "policies") for task, ps in sorted(by_task.items())]
    pooled = _agreement("pooled (policy, task) pairs", pairs, "pairs")
    return SimReal(
        condition=condition, pairs=pairs, per_task=per_task, pooled=pooled, unmatched_real=unmatched
    )


def fmt_metric(x: float) -> str:
    """Three decimals, or ``NaN`` for undefined values."""
    return "NaN" if math.isnan(x) else f"{x:.3f}"
