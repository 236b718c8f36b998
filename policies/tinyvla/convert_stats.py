"""``python -m vla_gym.policies.tinyvla.convert_stats IN.pkl OUT.json`` (or ``OUT.safetensors``).

Reads TinyVLA's ``dataset_stats.pkl`` with the toolkit's restricted unpickler (numpy arrays,
dtypes and plain containers only: a pickle naming any other class is refused with that class's
name and nothing is executed) and writes the safe twin the adapter reads by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vla_gym.policies.tinyvla.stats import read_stats_file, to_stats, write_stats
from vla_gym.policies.toolkit.errors import CheckpointError


def convert(src: Path, dst: Path) -> Path:
    """Convert ``src`` (a ``.pkl``) to ``dst`` (``.json`` or ``.safetensors``); returns ``dst``."""
    arrays = read_stats_file(src, allow_pickle=True)
    to_stats(arrays, src)  # the same checks the adapter applies
    return write_stats(arrays, dst)


def main(argv: list[str] | None = None) -> int:
    """CLI: convert ``dataset_stats.pkl`` to a JSON or safetensors twin; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="dataset_stats.pkl")
    parser.add_argument("dst", type=Path, help="dataset_stats.json or dataset_stats.safetensors")
    args = parser.parse_args(argv)
    try:
        out = convert(args.src, args.dst)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
