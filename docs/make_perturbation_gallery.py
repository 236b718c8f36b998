"""Render ``docs/perturbations.png``: one robosuite Lift frontview frame per perturbation.

Each row is a perturbation, the columns are strength 0 (identical to the unperturbed scene by
construction) and strength 1, from the same reset seed. Dynamics/latency/action/control-rate
perturbations do not change a single frame at reset, so for them the frame after a fixed
20-step action sequence is shown. Run from the repo root:

    MUJOCO_GL=egl .venv/bin/python docs/make_perturbation_gallery.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import vla_gym  # noqa: E402,F401
from vla_gym import perturbations as P  # noqa: E402

SIZE = 160
SEED = 3
CAMERA = "frontview"  # shows the robot too (agentview frames only the table at reset)
OUT = Path(__file__).resolve().parent / "perturbations.png"

# name -> (wrapper factory, number of scripted steps before the frame is taken)
ROWS: list[tuple[str, Callable[[gym.Env, float], gym.Env], int]] = [
    ("camera", lambda e, s: P.CameraPerturbation(e, s, camera=CAMERA), 0),
    ("lighting", lambda e, s: P.LightingPerturbation(e, s), 0),
    ("background", lambda e, s: P.BackgroundPerturbation(e, s), 0),
    ("layout", lambda e, s: P.LayoutPerturbation(e, s), 0),
    ("robot_init", lambda e, s: P.RobotInitPerturbation(e, s), 0),
    ("sensor_noise", lambda e, s: P.GaussianPixelNoise(e, s), 0),
    ("motion_blur", lambda e, s: P.MotionBlur(e, s), 0),
    ("jpeg", lambda e, s: P.JpegCompression(e, s), 0),
    ("language", lambda e, s: P.LanguagePerturbation(e, s), 0),
    ("action_noise", lambda e, s: P.ActionNoise(e, s), 20),
    ("latency", lambda e, s: P.ActionDelay(e, s), 20),
    ("control_rate", lambda e, s: P.ControlRate(e, s), 20),
    ("dynamics", lambda e, s: P.DynamicsPerturbation(e, s, friction_scale=0.2 if s else None), 20),
]


def _frame(make_wrapper: Callable[[gym.Env, float], gym.Env], strength: float, steps: int) -> tuple[np.ndarray, str]:
    np.random.seed(0)  # Lift draws its cube size at build time from the global RNG
    env = make_wrapper(gym.make("vla_gym/Lift", cameras=(CAMERA,), image_size=SIZE), strength)
    try:
        obs, _ = env.reset(seed=SEED)
        action = np.array([0.6, 0.4, -0.6, 0, 0, 0, -1], dtype=np.float32)
        for _ in range(steps):
            obs, *_ = env.step(action)
        return obs["images"][CAMERA], obs["instruction"]
    finally:
        env.close()


def _label(img: np.ndarray, text: str) -> np.ndarray:
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    draw.rectangle([0, 0, SIZE, 12], fill=(0, 0, 0))
    draw.text((2, 0), text[:30], fill=(255, 255, 255))
    return np.asarray(pil)


def main() -> None:
    """Render every row and write the grid."""
    tiles: list[list[np.ndarray]] = []
    for name, factory, steps in ROWS:
        row = []
        for s in (0.0, 1.0):
            img, instruction = _frame(factory, s, steps)
            caption = f"{name} s={s:g}" + (f" +{steps} steps" if steps else "")
            tile = _label(img, caption)
            if name == "language":
                pil = Image.fromarray(tile)
                ImageDraw.Draw(pil).rectangle([0, SIZE - 24, SIZE, SIZE], fill=(0, 0, 0))
                ImageDraw.Draw(pil).multiline_text((2, SIZE - 24), instruction[:28] + "\n" + instruction[28:56],
                                                   fill=(255, 255, 0))
                tile = np.asarray(pil)
            row.append(tile)
        tiles.append(row)
        print(f"rendered {name}")
    per_row = 4  # two perturbations (4 tiles) per grid row
    flat = [t for row in tiles for t in row]
    while len(flat) % per_row:
        flat.append(np.full_like(flat[0], 255))
    grid_rows = [np.concatenate(flat[i:i + per_row], axis=1) for i in range(0, len(flat), per_row)]
    grid = np.concatenate(grid_rows, axis=0)
    Image.fromarray(grid).save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB, {grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()
