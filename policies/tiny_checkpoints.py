"""Every tiny checkpoint of every family, for tests, benchmarks and demos.

``python -m vla_gym.policies.tiny_checkpoints OUTDIR [--seed N] [--families openvla,tinyvla,pi0]``
writes randomly initialised checkpoints with the release file names, config keys and parameter
names (see each family's ``make_tiny``). This module sits above the families' writers, so they
never import each other.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

OPENVLA_NAMES = ("openvla", "openvla-prismatic", "openvla-oft", "openvla-oft-film")
FAMILIES = ("openvla", "tinyvla", "pi0")


def _openvla(outdir: Path, seed: int) -> dict[str, Path]:
    """OpenVLA (HF release and Prismatic run) and OpenVLA-OFT (plain and FiLM), sharing one VLA."""
    from vla_gym.policies.openvla.make_tiny import norm_stats, write_hf_checkpoint, write_prismatic_run
    from vla_gym.policies.openvla_oft.make_tiny import write_film_checkpoint, write_oft_checkpoint

    stats = norm_stats("libero_spatial_no_noops", with_proprio=False)
    state = write_hf_checkpoint(outdir / "openvla", stats, seed)
    write_prismatic_run(outdir / "openvla-prismatic", state, stats)
    write_oft_checkpoint(outdir / "openvla-oft", base_state=state, seed=seed + 1)
    write_film_checkpoint(outdir / "openvla-oft-film", outdir / "openvla-oft", base_state=state, seed=seed + 2)
    return {name: outdir / name for name in OPENVLA_NAMES}


def _tinyvla(outdir: Path, seed: int) -> dict[str, Path]:
    """TinyVLA: ``tinyvla-base``, the LoRA ``tinyvla-checkpoint`` (``run/checkpoint-N``), ``tinyvla-merged``."""
    from vla_gym.policies.tinyvla.make_tiny import write_tiny_tinyvla

    dirs = write_tiny_tinyvla(outdir / "tinyvla", seed)
    return {f"tinyvla-{k}": v for k, v in dirs.items()}


def _pi0(outdir: Path, seed: int) -> dict[str, Path]:
    """pi0 and pi0.5 in both layouts: ``pi0-openpi``, ``pi0-lerobot``, ``pi05-openpi``, ``pi05-lerobot``."""
    from vla_gym.policies.pi0.make_tiny import write_tiny_pi0

    return {f"{v}-{layout}": write_tiny_pi0(outdir / f"{v}-{layout}", layout, v, seed)
            for v in ("pi0", "pi05") for layout in ("openpi", "lerobot")}


WRITERS = {"openvla": _openvla, "tinyvla": _tinyvla, "pi0": _pi0}


def make_all(outdir: Path, seed: int = 0, families: Sequence[str] = ("openvla",)) -> dict[str, Path]:
    """Write the tiny checkpoints of ``families`` under ``outdir``; returns their paths by name.

    The default is OpenVLA/OFT only (what most tests share); the CLI writes every family.
    """
    unknown = sorted(set(families) - set(WRITERS))
    if unknown:
        raise ValueError(f"unknown families {unknown}; valid: {list(WRITERS)}")
    outdir = Path(outdir)
    paths: dict[str, Path] = {}
    for family in families:
        paths.update(WRITERS[family](outdir, seed))
    return paths


def make_all_in_subprocess(outdir: Path) -> dict[str, Path]:
    """OpenVLA/OFT's :func:`make_all` in a child process (building models in a measuring process
    slows its later torch calls)."""
    outdir = Path(outdir)
    subprocess.run([sys.executable, "-m", "vla_gym.policies.tiny_checkpoints", str(outdir), "--families", "openvla"],
                   check=True, capture_output=True)
    return {name: outdir / name for name in OPENVLA_NAMES}


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m vla_gym.policies.tiny_checkpoints OUTDIR [--seed N] [--families ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {list(FAMILIES)}")
    args = parser.parse_args(argv)
    try:
        paths = make_all(args.outdir, args.seed, [f for f in args.families.split(",") if f])
    except ValueError as exc:
        parser.error(str(exc))
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
