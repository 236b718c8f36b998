"""What a family's ``make_tiny`` module declares, so that shared code never lists families.

A family folder ``policies/<family>/`` whose ``make_tiny`` module sets ``TINY = TinyCheckpoints(...)``
is found by :func:`vla_gym.policies.tiny_checkpoints.discover` (``pkgutil`` over this package):
``vla-gym checkpoints --families <name>`` writes it, the tests build each declared
``conf/policy`` option from it, and the benchmarks (``benchmarks/families.py``) measure it.
Adding a family therefore edits no shared list. Its quantization skip list is declared on its
policy class (``Policy.quantization_skip``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TinyOption:
    """How one ``conf/policy/<option>.yaml`` loads a tiny checkpoint of the family, and what measuring it needs.

    Attributes:
        checkpoint: Name (a key of the writer's result) of the dir given as ``policy.checkpoint``.
        paths: Further path arguments, ``from_pretrained`` kwarg -> checkpoint name (TinyVLA's
            ``model_base``).
        kwargs: Fixed ``from_pretrained`` kwargs the benchmarks pass (pi0: ``variant``).
        cpu_kwargs: More kwargs on a CPU (pi0: ``precision=fp32``; bf16 batched matmuls run ~100x
            slower on CPUs without bf16 kernels). Explicit kwargs override both.
        wrist: Whether its fake observations carry a wrist image.
        stochastic: A sampling policy (diffusion, flow matching): reseeded before every compared call.
        reference_setting: The quantization setting others are compared with (its reference dtype).
    """

    checkpoint: str
    paths: Mapping[str, str] = field(default_factory=dict)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    cpu_kwargs: Mapping[str, Any] = field(default_factory=dict)
    wrist: bool = True
    stochastic: bool = False
    reference_setting: str = "bf16"


@dataclass(frozen=True)
class TinyCheckpoints:
    """One family's tiny checkpoint set, as its ``make_tiny.TINY`` declares it.

    Attributes:
        name: The ``--families`` name of the set.
        write: ``(outdir, seed) -> {checkpoint name: path}``; writes under ``outdir`` only.
        options: ``conf/policy`` option name -> how it loads from the written set.
        default: Part of what ``make_all()`` writes when no family is named (the set most tests share).
    """

    name: str
    write: Callable[[Path, int], dict[str, Path]]
    options: Mapping[str, TinyOption] = field(default_factory=dict)
    default: bool = False
