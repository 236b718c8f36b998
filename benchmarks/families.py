"""The torch policy families the benchmarks measure: how to load each and where its tiny checkpoint comes from.

Every family loads through its public ``from_pretrained`` (the Hydra ``_target_`` of its
``conf/policy`` YAML), exactly as the runner does. Tiny checkpoints are written by each family's
own ``make_tiny`` in a child process (building models in the measuring process slows its later
torch calls), under one scratch directory per benchmark run.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vla_gym.policies.tiny_checkpoints import make_all_in_subprocess


def _run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True, capture_output=True)


def _tiny_openvla(name: str) -> Callable[[Path], tuple[Path, dict[str, Any]]]:
    def write(root: Path) -> tuple[Path, dict[str, Any]]:
        if not (root / "openvla").is_dir():
            make_all_in_subprocess(root)
        return root / name, {}

    return write


def _tiny_tinyvla(root: Path) -> tuple[Path, dict[str, Any]]:
    out = root / "tinyvla"
    if not out.is_dir():
        _run("vla_gym.policies.tinyvla.make_tiny", str(out))
    (checkpoint,) = sorted((out / "run").glob("checkpoint-*"))
    return checkpoint, {"model_base": out / "base"}


def _tiny_pi0(variant: str) -> Callable[[Path], tuple[Path, dict[str, Any]]]:
    def write(root: Path) -> tuple[Path, dict[str, Any]]:
        out = root / f"{variant}-openpi"
        if not out.is_dir():
            _run("vla_gym.policies.pi0.make_tiny", str(out), "--layout", "openpi", "--variant", variant)
        return out, {}

    return write


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


FAMILIES: dict[str, Family] = {
    "openvla": Family("vla_gym.policies.openvla:OpenVLAPolicy", _tiny_openvla("openvla"), wrist=False),
    "openvla_oft": Family("vla_gym.policies.openvla_oft:OpenVLAOFTPolicy", _tiny_openvla("openvla-oft"),
                          wrist=True),
    # TinyVLA and pi0 state their fp32 math as the reference (issues 11/12); fp16/bf16 are measured against it.
    "tinyvla": Family("vla_gym.policies.tinyvla:TinyVLAPolicy", _tiny_tinyvla, wrist=True, stochastic=True,
                      reference_setting="fp32"),
    "pi0": Family("vla_gym.policies.pi0:Pi0Policy", _tiny_pi0("pi0"), wrist=True, stochastic=True,
                  reference_setting="fp32", extra={"variant": "pi0"}, cpu_extra={"precision": "fp32"}),
    "pi05": Family("vla_gym.policies.pi0:Pi0Policy", _tiny_pi0("pi05"), wrist=True, stochastic=True,
                   reference_setting="fp32", extra={"variant": "pi05"}, cpu_extra={"precision": "fp32"}),
}


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
