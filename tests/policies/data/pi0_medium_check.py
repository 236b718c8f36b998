"""One-off check at realistic sequence sizes (not a test: its fixtures are ~35 MB, too big to commit).

Same references and procedure as ``pi0_make_reference_fixture.py`` (LeRobot) and
``pi0_make_openpi_fixture.py`` (openpi), with the real token layout: 3 cameras x 224 px / patch 14 =
768 image tokens + 7 prompt tokens, Gemma head_dim 256 (8/1 heads), 3 layers, horizon 50, vocab
1000; weights scaled by 1/sqrt(fan_in) so the random network is not chaotic. Usage::

    /tmp/lrvenv/bin/python tests/policies/data/pi0_medium_check.py make lerobot /tmp/pi0_medium
    /tmp/opvenv/bin/python tests/policies/data/pi0_medium_check.py make openpi /tmp/pi0_medium /tmp/opsrc/src
    .venv/bin/python tests/policies/data/pi0_medium_check.py compare /tmp/pi0_medium

``compare`` prints, per reference and variant, max |ours - reference| in float32 and bf16, next to
the fp32 rounding noise of the computation itself (ours with float64 internals vs ours float32).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
SCRIPTS = {"lerobot": "pi0_make_reference_fixture.py", "openpi": "pi0_make_openpi_fixture.py"}
STEMS = {"lerobot": "pi0_ref", "openpi": "pi0_openpi"}


def _randomize(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            std = 1.0 / math.sqrt(p.shape[-1]) if p.ndim >= 2 else 0.2
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def make(source: str, outdir: Path, openpi_src: str | None) -> None:
    spec = importlib.util.spec_from_file_location("pi0_fixture", HERE / SCRIPTS[source])
    fx = importlib.util.module_from_spec(spec)
    sys.modules["pi0_fixture"] = fx
    spec.loader.exec_module(fx)
    fx.IMAGE, fx.PATCH, fx.HORIZON, fx.VOCAB = 224, 14, 50, 1000
    dims = {"gemma_2b": dict(width=128, depth=3, mlp_dim=256, num_heads=8, num_kv_heads=1, head_dim=256),
            "gemma_300m": dict(width=64, depth=3, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=256)}
    make_dims = fx.TinyGemma if source == "openpi" else dict
    for variant, values in dims.items():
        fx.TINY[variant] = make_dims(**values)
    fx.randomize = _randomize
    outdir.mkdir(parents=True, exist_ok=True)
    fx.main(outdir) if source == "lerobot" else fx.main(Path(openpi_src), outdir)


def compare(outdir: Path) -> None:
    from safetensors.torch import load_file
    from vla_gym.policies.pi0 import modeling as m

    keep = {"lerobot": m.LEROBOT_FP32_KEEP, "openpi": m.OPENPI_FP32_KEEP}
    for source, stem in STEMS.items():
        for name in ("pi0", "pi05"):
            state = load_file(outdir / f"{stem}_{name}.safetensors")
            io = load_file(outdir / f"{stem}_{name}_io.safetensors")
            dims = m.dims_from_state_dict(state, pi05=name == "pi05", action_horizon=io["noise"].shape[1])
            model = m.Pi0Model(dims).eval()
            model.load_state_dict(m.canonical_state_dict(state))
            images = [io[f"image_{k}"] for k in range(3)]
            args = (images, [io[f"image_mask_{k}"] for k in range(3)], io["tokens"], io["token_masks"])
            out = model.sample_actions(*args, io["state"], io["noise"], time_schedule=source)
            model.double()
            out64 = model.sample_actions([x.double() for x in images], *args[1:], io["state"].double(), io["noise"],
                                         time_schedule=source)
            model.set_precision(torch.bfloat16, keep[source], round_kept=source == "openpi")
            out16 = model.sample_actions(*args, io["state"], io["noise"], time_schedule=source)
            ref = io["actions_fp32"]
            print(f"{source:7s} {name:4s} max|a| {ref.abs().max():.2f}  fp32 {(out - ref).abs().max():.1e} "
                  f"(fp32 noise {(out64 - out).abs().max():.1e})  bf16 {(out16 - io['actions_bf16']).abs().max():.1e} "
                  f"(reference bf16-fp32 {(io['actions_bf16'] - ref).abs().max():.1e})")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], Path(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        compare(Path(sys.argv[2]))
