"""Every tiny checkpoint of every family, for tests, benchmarks and demos.

``python -m vla_gym.policies.tiny_checkpoints OUTDIR [--seed N] [--families openvla,tinyvla,pi0]``
writes randomly initialised checkpoints with the release file names, config keys and parameter
names. The families are discovered, not listed: each family folder whose ``make_tiny`` module
declares ``TINY`` (a :class:`~vla_gym.policies.toolkit.tiny.TinyCheckpoints`) is one
``--families`` name. This module sits above the families' writers, so they never import each other.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from vla_gym.policies.toolkit.tiny import TinyCheckpoints, TinyOption

PACKAGE = "vla_gym.policies"


def discover() -> dict[str, TinyCheckpoints]:
    """``--families`` name -> declaration, from every ``vla_gym.policies.<family>.make_tiny.TINY``.

    Only family packages that have a ``make_tiny`` module are imported (their writers import
    torch lazily or at top level; nothing else of the package is loaded).
    """
    package = importlib.import_module(PACKAGE)
    found: dict[str, TinyCheckpoints] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg or importlib.util.find_spec(f"{PACKAGE}.{info.name}.make_tiny") is None:
            continue
        tiny = getattr(importlib.import_module(f"{PACKAGE}.{info.name}.make_tiny"), "TINY", None)
        if tiny is None:
            continue  # helpers another family's declaration uses (openvla: written by openvla_oft's set)
        if not isinstance(tiny, TinyCheckpoints):
            raise TypeError(f"{PACKAGE}.{info.name}.make_tiny.TINY is a {type(tiny).__name__}, not TinyCheckpoints")
        if tiny.name in found:
            raise ValueError(f"two families declare the tiny set {tiny.name!r}")
        found[tiny.name] = tiny
    return found


def options() -> dict[str, tuple[TinyCheckpoints, TinyOption]]:
    """``conf/policy`` option -> (the set that serves it, how it loads), over every discovered family."""
    out: dict[str, tuple[TinyCheckpoints, TinyOption]] = {}
    for tiny in discover().values():
        for option, how in tiny.options.items():
            if option in out:
                raise ValueError(f"conf/policy option {option!r} is declared by {out[option][0].name!r} "
                                 f"and {tiny.name!r}")
            out[option] = (tiny, how)
    return out


def make_all(outdir: Path, seed: int = 0, families: Sequence[str] | None = None) -> dict[str, Path]:
    """Write the tiny checkpoints of ``families`` under ``outdir``; returns their paths by name.

    ``None`` writes the sets declared ``default`` (OpenVLA/OFT: what most tests share); the CLI
    writes every family.
    """
    found = discover()
    if families is None:
        families = [name for name, tiny in found.items() if tiny.default]
    unknown = sorted(set(families) - set(found))
    if unknown:
        raise ValueError(f"unknown families {unknown}; valid: {list(found)}")
    outdir = Path(outdir)
    paths: dict[str, Path] = {}
    for family in families:
        paths.update(found[family].write(outdir, seed))
    return paths


def make_in_subprocess(outdir: Path, family: str, seed: int = 0) -> dict[str, Path]:
    """:func:`make_all` of one family in a child process (building models in a measuring process
    slows its later torch calls); returns the paths the child printed."""
    done = subprocess.run([sys.executable, "-m", "vla_gym.policies.tiny_checkpoints", str(outdir),
                           "--seed", str(seed), "--families", family], check=True, capture_output=True, text=True)
    return {name: Path(path) for name, _, path in
            (line.partition(": ") for line in done.stdout.splitlines() if ": " in line)}


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m vla_gym.policies.tiny_checkpoints OUTDIR [--seed N] [--families ...]``."""
    try:
        names = list(discover())
    except ImportError as exc:  # the writers build torch models: the core install has no torch
        raise SystemExit(f"error: writing tiny checkpoints needs the torch extra ({exc}); install it with "
                         "`pip install torch==2.14.1 torchvision==0.29.1` then `pip install -e '.[torch]'` "
                         "(make install-dev does both)") from None
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", default=",".join(names), help=f"comma-separated, of {names}")
    args = parser.parse_args(argv)
    try:
        paths = make_all(args.outdir, args.seed, [f for f in args.families.split(",") if f])
    except ValueError as exc:
        parser.error(str(exc))
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
