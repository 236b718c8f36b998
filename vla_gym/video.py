"""Episode videos: what the policy saw beside a third-person view, instruction on top.

Frames are composed in memory and encoded once per episode with imageio-ffmpeg (a static
ffmpeg ships in its wheel, so no system ffmpeg is needed). The file is written under a
temporary name and renamed, so a crash never leaves a truncated mp4 behind.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BANNER_HEIGHT = 32


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def compose_frame(panels: list[np.ndarray], instruction: str, size: int, footer: str = "") -> np.ndarray:
    """Put square panels side by side under a banner with the instruction (and a status)."""
    row = np.concatenate([_fit(p, size) for p in panels], axis=1)
    canvas = Image.new("RGB", (row.shape[1], row.shape[0] + BANNER_HEIGHT), (20, 20, 20))
    canvas.paste(Image.fromarray(row), (0, BANNER_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    chars_per_line = max(20, row.shape[1] // 6)
    lines = textwrap.wrap(instruction, chars_per_line)[:2] or [""]
    for i, line in enumerate(lines):
        draw.text((4, 2 + 14 * i), line, fill=(255, 255, 255), font=font)
    if footer:
        draw.text((row.shape[1] - 6 * len(footer) - 4, 2), footer, fill=(255, 220, 0), font=font)
    return np.asarray(canvas)


def write_video(path: str | os.PathLike, frames: list[np.ndarray], fps: int) -> Path:
    """Encode ``frames`` (H, W, 3 uint8) as H.264 mp4 at ``fps``, atomically."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    # even sizes are all H.264 needs; macro_block_size=2 stops imageio from resizing
    writer = imageio.get_writer(tmp, fps=fps, codec="libx264", pixelformat="yuv420p",
                                macro_block_size=2, ffmpeg_log_level="error")
    try:
        for f in frames:
            writer.append_data(f)
    finally:
        writer.close()
    os.replace(tmp, path)
    return path
