"""The torch policy families the benchmarks measure: how to load each and where its tiny checkpoint comes from.

Discovered, not listed: every ``conf/policy`` option that a family's ``make_tiny.TINY`` declares
(:mod:`vla_gym.policies.tiny_checkpoints`) is a benchmarked family, under its option name. Each
loads through the ``_target_`` of its ``conf/policy`` YAML (its public ``from_pretrained``),
exactly as the runner does. Tiny checkpoints are written by the family's declared writer in a
child process (building models in the measuring process slows its later torch calls), under
one scratch directory per benchmark run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from vla_gym.policies.tiny_checkpoints import make_in_subprocess, options
from vla_gym.policies.toolkit.tiny import TinyCheckpoints, TinyOption

CONF_POLICY = Path(__file__).resolve().parents[1] / "conf" / "policy"


@dataclass(frozen=True)
class Family:
    """One benchmarked family.

    Attributes:
        target: ``module:Class`` whose ``from_pretrained`` loads it.
        tiny: ``scratch_dir -> (checkpoint, extra from_pretrained kwargs)`` for its tiny checkpoint.
        wrist: Whether its fake observations carry a wrist image.
        stochastic: Sampling policies (diffusion, flow matching): reseeded before every compared call.
        reference_setting: The quantization setting others are compared with (its reference dtype).
        extra: Fixed ``from_pretrained`` kwargs.
        cpu_extra: More kwargs on a CPU (pi0: ``precision=fp32``; its reference bf16 runs batched
            matmuls ~100x slower on CPUs without bf16 kernels). Explicit kwargs override both.
    """

    target: str
    tiny: Callable[[Path], tuple[Path, dict[str, Any]]]
    wrist: bool
    stochastic: bool = False
    reference_setting: str = "bf16"
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_extra: dict[str, Any] = field(default_factory=dict)

    def policy_class(self) -> Any:
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


def _target(option: str) -> str:
    """``module:Class`` of ``conf/policy/<option>.yaml``'s ``_target_`` (``...Class.from_pretrained``)."""
    path = str(OmegaConf.load(CONF_POLICY / f"{option}.yaml")["_target_"]).removesuffix(".from_pretrained")
    module, _, cls = path.rpartition(".")
    return f"{module}:{cls}"


def _tiny(tiny: TinyCheckpoints, how: TinyOption) -> Callable[[Path], tuple[Path, dict[str, Any]]]:
    def write(root: Path) -> tuple[Path, dict[str, Any]]:
        out = root / tiny.name  # one dir per set, written once per scratch dir
        done = out / "paths.txt"
        if not done.is_file():
            paths = make_in_subprocess(out, tiny.name)
            done.write_text("".join(f"{k}: {v}\n" for k, v in paths.items()))
        paths = dict(line.split(": ", 1) for line in done.read_text().splitlines())
        return Path(paths[how.checkpoint]), {k: Path(paths[v]) for k, v in how.paths.items()}

    return write


def _family(option: str, tiny: TinyCheckpoints, how: TinyOption) -> Family:
    return Family(_target(option), _tiny(tiny, how), wrist=how.wrist, stochastic=how.stochastic,
                  reference_setting=how.reference_setting, extra=dict(how.kwargs), cpu_extra=dict(how.cpu_kwargs))


FAMILIES: dict[str, Family] = {option: _family(option, tiny, how) for option, (tiny, how) in options().items()}


def load(family: str, checkpoint: Path, quantization: dict[str, Any] | str, device: str = "cpu",
         **kwargs: Any) -> Any:
    """Build a policy of ``family`` through its public factory, as Hydra would."""
    fam = FAMILIES[family]
    q = {"name": quantization} if isinstance(quantization, str) else quantization
    opts = {**fam.extra, **(fam.cpu_extra if str(device).startswith("cpu") else {}), **kwargs}
    return fam.policy_class().from_pretrained(checkpoint, device=device, quantization=q, **opts)


def tiny_checkpoint(family: str, scratch: Path) -> tuple[Path, dict[str, Any]]:
    """The family's tiny checkpoint under ``scratch`` (written on first use) and its extra kwargs."""
    return FAMILIES[family].tiny(Path(scratch))
