"""Plots are real PNGs that decode."""

from __future__ import annotations

import imageio.v2 as imageio

from .conftest import Built


def test_plots_exist_and_decode(report: Built) -> None:
    plots = sorted(p.name for p in (report.out / "plots").glob("*.png"))
    assert plots == ["per_task_libero_spatial.png", "success_vs_strength_camera.png"]
    for name in plots:
        img = imageio.imread(report.out / "plots" / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 5  # something was drawn
    assert not list((report.out / "plots").glob(".*.tmp"))  # atomic writes left no temp files
