"""Pearson r and MMRV against hand-computed values, the real-CSV reader, and the report section."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vla_gym.report.load import ReportInputError
from vla_gym.report.sim_real import mmrv, pearson, read_real_csv

from .conftest import T1, T2, Built


def test_rank_violation_case() -> None:
    # Sim orders items 1 < 2, real orders them 2 < 1: items 1 and 2 each violate by |0.6 − 0.4|.
    sim, real = [0.2, 0.5, 0.8], [0.3, 0.6, 0.4]
    assert mmrv(sim, real) == pytest.approx((0 + 0.2 + 0.2) / 3)
    # Deviations (−.3, 0, .3) and (−.1333, .1667, −.0333): r = .03 / sqrt(.18 · .046667).
    assert pearson(sim, real) == pytest.approx(0.03 / math.sqrt(0.18 * 0.046667), abs=1e-4)
    assert pearson(sim, real) == pytest.approx(0.32733, abs=1e-4)


def test_no_rank_violation_case() -> None:
    sim, real = [0.1, 0.4, 0.9], [0.2, 0.3, 0.7]
    assert mmrv(sim, real) == 0.0
    assert pearson(sim, real) == pytest.approx(0.21 / math.sqrt(0.326667 * 0.14), abs=1e-4)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_ties_follow_the_published_formula() -> None:
    # Sim ties items 0 and 1, real does not: 1[(s0<s1) ≠ (r0<r1)] = 1[F ≠ T] counts for item 0 only.
    assert mmrv([0.5, 0.5], [0.2, 0.6]) == pytest.approx(0.4 / 2)


def test_pearson_undefined_is_nan() -> None:
    assert math.isnan(pearson([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))
    assert math.isnan(pearson([0.1, 0.2], [0.4, 0.4]))
    assert math.isnan(pearson([0.3], [0.4]))
    assert mmrv([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]) == pytest.approx((0.2 + 0.1 + 0) / 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("policy,task,success\na,b,0.5\n", "missing column.s. real_success; found policy, task, success"),
        ("policy,task,real_success\na,b,80\n", r"outside \[0, 1\] \(write percentages with a % sign"),
        ("policy,task,real_success\na,b,abc\n", "not a number"),
        ("policy,task,real_success\na,b,0.5\na,b,0.6\n", r"\(a, b\) appears twice"),
        ("policy,task,real_success\n,b,0.5\n", "must not be empty"),
        ("policy,task,real_success\n", "no data rows"),
    ],
)
def test_real_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "real.csv"
    path.write_text(text)
    with pytest.raises(ReportInputError, match=message):
        read_real_csv(path)


def test_real_csv_formats(tmp_path: Path) -> None:
    path = tmp_path / "real.csv"
    path.write_text("\ufeffpolicy, task ,real_success\nA,t1,80%\nA,t2,0.25\nB,t1, 1 \n")
    assert read_real_csv(path) == {("A", "t1"): 0.8, ("A", "t2"): 0.25, ("B", "t1"): 1.0}


def test_report_sim_real_section(report: Built) -> None:
    md = (report.out / "report.md").read_text()
    # Task 1: sim (.75, .5, 0) vs real (.6, .7, .1); alpha and beta swap, gap .1 → MMRV .2/3.
    assert f"| libero_spatial/{T1} | 3 | 0.882 | 0.067 |" in md
    # Task 2: sim (.25, 1, .5) vs real (.2, .9, .5); same order → MMRV 0.
    assert f"| libero_spatial/{T2} | 3 | 0.994 | 0.000 |" in md
    # Pooled over 6 pairs: violations .1 (alpha/T1), .1 (beta/T1), .2 (gamma/T2 vs beta/T1, sim tie) → .4/6.
    assert "| pooled (policy, task) pairs | 6 | 0.933 | 0.067 |" in md
    assert "delta / put_the_bowl_on_the_stove" in md  # unmatched real row is reported
    # The camera-perturbed alpha runs are not used: alpha's T1 sim rate is the unperturbed 0.75.
    assert f"| alpha | libero_spatial/{T1} | 0.750 | 0.600 | 4 |" in md
    assert "Pearson r=0.933 MMRV=0.067" in report.stdout


def test_all_conditions_pool_perturbed_runs(report: Built, tmp_path: Path) -> None:
    from vla_gym.report.cli import main

    out = tmp_path / "r"
    assert (
        main(
            [
                str(report.root),
                "--out",
                str(out),
                "--real",
                str(report.root / "real.csv"),
                "--sim-condition",
                "all",
                "--no-plots",
            ]
        )
        == 0
    )
    md = (out / "report.md").read_text()
    # alpha on T1 over none + camera 0.5 + camera 1.0: (3 + 1 + 0) / 12.
    assert f"| alpha | libero_spatial/{T1} | 0.333 | 0.600 | 12 |" in md
    assert not (out / "plots").exists()


def test_unmatched_csv_is_a_clear_error(report: Built, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vla_gym.report.cli import main

    real = tmp_path / "real.csv"
    real.write_text("policy,task,real_success\nzeta,nothing,0.5\n")
    assert main([str(report.root), "--out", str(tmp_path / "r"), "--real", str(real)]) == 2
    err = capsys.readouterr().err
    assert "no row of the real CSV matches" in err and "alpha, beta, gamma" in err
    assert not (tmp_path / "r").exists()  # nothing written on bad input
