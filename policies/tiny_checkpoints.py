"""Every tiny checkpoint of every family, for tests, benchmarks and demos.

``python -m vla_gym.policies.tiny_checkpoints OUTDIR [--seed N]`` writes randomly initialised
checkpoints with the release file names, config keys and parameter names (see each family's
``make_tiny``). This module sits above the families' writers, so they never import each other.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def make_all(outdir: Path, seed: int = 0) -> dict[str, Path]:
    """Write every tiny checkpoint under ``outdir``; returns their paths by name."""
    from vla_gym.policies.openvla.make_tiny import norm_stats, write_hf_checkpoint, write_prismatic_run
    from vla_gym.policies.openvla_oft.make_tiny import write_film_checkpoint, write_oft_checkpoint

    outdir = Path(outdir)
    stats = norm_stats("libero_spatial_no_noops", with_proprio=False)
    state = write_hf_checkpoint(outdir / "openvla", stats, seed)
    write_prismatic_run(outdir / "openvla-prismatic", state, stats)
    write_oft_checkpoint(outdir / "openvla-oft", base_state=state, seed=seed + 1)
    write_film_checkpoint(outdir / "openvla-oft-film", outdir / "openvla-oft", base_state=state, seed=seed + 2)
    return {name: outdir / name for name in ("openvla", "openvla-prismatic", "openvla-oft", "openvla-oft-film")}


def make_all_in_subprocess(outdir: Path) -> dict[str, Path]:
    """:func:`make_all` in a child process (building models in a measuring process slows its later torch calls)."""
    outdir = Path(outdir)
    subprocess.run([sys.executable, "-m", "vla_gym.policies.tiny_checkpoints", str(outdir)], check=True,
                   capture_output=True)
    return {name: outdir / name for name in ("openvla", "openvla-prismatic", "openvla-oft", "openvla-oft-film")}


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m vla_gym.policies.tiny_checkpoints OUTDIR [--seed N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in make_all(args.outdir, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
