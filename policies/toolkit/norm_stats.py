"""Normalisation statistics that say what kind they are.

A checkpoint's statistics are quantile bounds (OpenVLA/OFT: q01/q99, actions mapped to [-1, 1]),
mean/std (openpi pi0, LeRobot) or min/max (TinyVLA, LeRobot). Using one kind's numbers with
another kind's formula fails silently -- openpi #849: a z-score/quantile switch took pi0-FAST to
0 % success -- so every :class:`NormStats` carries its :class:`NormKind` and a family states the
kind it expects when it loads (:meth:`NormStats.expect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

import numpy as np

from vla_gym.policies.toolkit.errors import NormStatsError


class NormKind(str, Enum):
    """How values are normalised."""

    BOUNDS_Q01_Q99 = "bounds_q01_q99"
    """``2 (x - q01) / (q99 - q01) - 1``, clipped to [-1, 1] (OpenVLA, OFT)."""
    MEAN_STD = "mean_std"
    """``(x - mean) / (std + eps)`` (openpi pi0/pi0.5, LeRobot)."""
    MIN_MAX = "min_max"
    """``2 (x - min) / (max - min) - 1`` (TinyVLA, LeRobot)."""


_FIELDS = {NormKind.BOUNDS_Q01_Q99: ("q01", "q99"), NormKind.MEAN_STD: ("mean", "std"),
           NormKind.MIN_MAX: ("min", "max")}


@dataclass(frozen=True)
class NormStats:
    """Statistics of one kind for a D-dim quantity; ``mask[d]`` False leaves dim d untouched.

    Attributes:
        kind: Which formula the numbers belong to.
        a, b: ``(q01, q99)``, ``(mean, std)`` or ``(min, max)``, float64 (D,).
        mask: bool (D,), True where the dimension is normalised.
        eps: Added to the denominator (``q99 - q01``, ``std`` or ``max - min``), as the family's reference does.
    """

    kind: NormKind
    a: np.ndarray
    b: np.ndarray
    mask: np.ndarray
    eps: float = 0.0

    @classmethod
    def from_mapping(cls, kind: NormKind | str, values: Mapping[str, Any], *, eps: float = 0.0,
                     source: str = "stats") -> NormStats:
        """Build from a stats dict holding this kind's two fields (and optionally ``mask``)."""
        kind = NormKind(kind)
        names = _FIELDS[kind]
        missing = [n for n in names if n not in values]
        if missing:
            raise NormStatsError(f"{source}: {kind.value} statistics need {list(names)}; missing {missing} "
                                 f"(present: {sorted(values)})")
        a, b = (np.asarray(values[n], dtype=np.float64) for n in names)
        if a.ndim != 1 or a.shape != b.shape:
            raise NormStatsError(f"{source}: {names[0]}/{names[1]} must be 1-D of equal length, "
                                 f"got {a.shape} and {b.shape}")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise NormStatsError(f"{source}: non-finite statistics")
        mask = np.asarray(values.get("mask", np.ones_like(a, dtype=bool)), dtype=bool)
        if mask.shape != a.shape:
            raise NormStatsError(f"{source}: mask has shape {mask.shape}, statistics {a.shape}")
        return cls(kind, a, b, mask, float(eps))

    def expect(self, kind: NormKind | str, family: str) -> NormStats:
        """Return self if of ``kind``; else a :class:`NormStatsError` naming both kinds."""
        kind = NormKind(kind)
        if self.kind is not kind:
            raise NormStatsError(f"{family} expects {kind.value} statistics but the checkpoint's are "
                                 f"{self.kind.value}; refusing to mix normalisations")
        return self

    @property
    def dim(self) -> int:
        """Number of normalised dimensions."""
        return int(self.a.shape[0])

    def _scale(self) -> np.ndarray:
        return (self.b if self.kind is NormKind.MEAN_STD else self.b - self.a) + self.eps

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Raw values ``(..., D)`` -> normalised values."""
        x = self._check(x)
        if self.kind is NormKind.MEAN_STD:
            y = (x - self.a) / self._scale()
        else:
            y = 2.0 * (x - self.a) / self._scale() - 1.0
            if self.kind is NormKind.BOUNDS_Q01_Q99:
                y = np.clip(y, -1.0, 1.0)
        return np.where(self.mask, y, x)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        """Normalised values ``(..., D)`` -> raw values."""
        y = self._check(y)
        if self.kind is NormKind.MEAN_STD:
            x = y * self._scale() + self.a
        else:
            x = 0.5 * (y + 1.0) * self._scale() + self.a
        return np.where(self.mask, x, y)

    def _check(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        if v.shape[-1:] != (self.dim,):
            raise NormStatsError(f"values have last dimension {v.shape[-1:]} but the statistics are {self.dim}-D")
        return v
