"""Success tables: values checked against hand-computed rates and Wilson intervals."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from .conftest import T1, T2, Built

# Wilson 95% intervals (z = 1.96) worked out by hand for n = 8 and n = 4.
WILSON = {
    (4, 8): (0.2152, 0.7848),
    (6, 8): (0.4093, 0.9285),
    (2, 8): (0.0715, 0.5907),
    (1, 8): (0.0224, 0.4709),
    (0, 8): (0.0, 0.3244),
    (3, 4): (0.3006, 0.9544),
    (1, 4): (0.0456, 0.6994),
    (2, 4): (0.1500, 0.8500),
    (0, 4): (0.0, 0.4899),
    (4, 4): (0.5101, 1.0),
}


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "summary.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("policy", "pert", "strength", "k", "errors"),
    [
        ("alpha", "none", 0.0, 4, 0),
        ("beta", "none", 0.0, 6, 0),
        ("gamma", "none", 0.0, 2, 1),
        ("alpha", "camera", 0.5, 1, 0),
        ("alpha", "camera", 1.0, 0, 0),
    ],
)
def test_suite_rows(report: Built, policy: str, pert: str, strength: float, k: int, errors: int) -> None:
    rows = [
        r
        for r in _rows(report.out)
        if r["level"] == "suite"
        and r["policy"] == policy
        and r["perturbation"] == pert
        and float(r["strength"]) == strength
    ]
    assert len(rows) == 1
    r = rows[0]
    assert r["suite"] == "libero_spatial" and r["task"] == ""
    assert (int(r["episodes"]), int(r["successes"]), int(r["errors"])) == (8, k, errors)
    assert float(r["success_rate"]) == pytest.approx(k / 8)
    lo, hi = WILSON[(k, 8)]
    assert float(r["ci_low"]) == pytest.approx(lo, abs=1e-4)
    assert float(r["ci_high"]) == pytest.approx(hi, abs=1e-4)


@pytest.mark.parametrize(
    ("policy", "task", "k"),
    [
        ("alpha", T1, 3),
        ("alpha", T2, 1),
        ("beta", T1, 2),
        ("beta", T2, 4),
        ("gamma", T1, 0),
        ("gamma", T2, 2),
    ],
)
def test_task_rows(report: Built, policy: str, task: str, k: int) -> None:
    rows = [
        r
        for r in _rows(report.out)
        if r["level"] == "task"
        and r["policy"] == policy
        and r["perturbation"] == "none"
        and r["task"] == task
    ]
    assert len(rows) == 1
    assert float(rows[0]["success_rate"]) == pytest.approx(k / 4)
    lo, hi = WILSON[(k, 4)]
    assert (float(rows[0]["ci_low"]), float(rows[0]["ci_high"])) == pytest.approx((lo, hi), abs=1e-4)


def test_row_counts_and_order(report: Built) -> None:
    rows = _rows(report.out)
    suite = [(r["policy"], r["perturbation"], r["strength"]) for r in rows if r["level"] == "suite"]
    # Unperturbed first within a policy, then perturbations by strength.
    assert suite == [
        ("alpha", "none", "0"),
        ("alpha", "camera", "0.5"),
        ("alpha", "camera", "1"),
        ("beta", "none", "0"),
        ("gamma", "none", "0"),
    ]
    assert sum(r["level"] == "task" for r in rows) == 10


def test_stdout_and_markdown(report: Built) -> None:
    assert "5 run(s), 40 episode(s)" in report.stdout
    assert "75.0%" in report.stdout and "[40.9, 92.9]" in report.stdout  # beta
    md = (report.out / "report.md").read_text()
    assert "| beta | libero_spatial | none | 0 | 75.0% | [40.9, 92.9] | 8 | 0 | 65.0 |" in md
    assert "| gamma | libero_spatial | none | 0 | 25.0% | [7.1, 59.1] | 8 | 1 |" in md
    assert "![success_vs_strength_camera](plots/success_vs_strength_camera.png)" in md
    assert "## Per task" in md and f"| alpha | libero_spatial | none | 0 | {T1} | 75.0% |" in md
