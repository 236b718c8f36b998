"""The fake family's tiny checkpoint and its declaration (``TINY``), found by discovery."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from vla_gym.policies.fake_family.policy import WEIGHTS, build_model
from vla_gym.policies.toolkit.tiny import TinyCheckpoints, TinyOption


def write_tiny(outdir: Path, seed: int = 0) -> dict[str, Path]:
    """``fake-vla/model.safetensors``, random weights from ``seed``."""
    torch.manual_seed(seed)
    out = Path(outdir) / "fake-vla"
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in build_model().state_dict().items()}, str(out / WEIGHTS))
    return {"fake-vla": out}


TINY = TinyCheckpoints(name="fake", write=write_tiny, options={"fake_vla": TinyOption("fake-vla", wrist=False)})
