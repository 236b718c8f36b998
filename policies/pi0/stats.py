"""State/action normalisation of pi0 / pi0.5 checkpoints: openpi ``norm_stats.json`` or LeRobot normaliser files.

The kind is declared by the recipe and asserted (:class:`~vla_gym.policies.toolkit.norm_stats.NormStats`
``.expect``): openpi uses mean/std for pi0 and q01/q99 quantiles for pi0.5
(``use_quantile_norm = model_type != PI0``); LeRobot uses what the checkpoint's
``normalization_mapping`` says (pi0 ``MEAN_STD``, pi0.5 ``QUANTILES`` by default). A stats file
that lacks the fields of that kind stops with a message naming the file.

The formulas are each framework's own (they differ in their epsilons, and neither clips):

- openpi (``transforms.Normalize/Unnormalize``): ``(x - mean) / (std + 1e-6)``;
  ``(x - q01) / (q99 - q01 + 1e-6) * 2 - 1``; stats cut to the input's dims.
- LeRobot (``normalize_processor._apply_transform``): ``(x - mean) / (std + eps)`` with the
  processor's ``eps`` (1e-8); ``2 (x - q01) / (q99 - q01) - 1``, eps only where ``q99 == q01``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vla_gym.policies.toolkit.errors import CheckpointError, NormStatsError
from vla_gym.policies.toolkit.norm_stats import NormKind, NormStats
from vla_gym.policies.toolkit.safe_load import read_json

OPENPI_EPS = 1e-6
LEROBOT_EPS = 1e-8
LEROBOT_KINDS = {"MEAN_STD": NormKind.MEAN_STD, "QUANTILES": NormKind.BOUNDS_Q01_Q99}
RULES = ("openpi", "lerobot")


@dataclass(frozen=True)
class FeatureNorm:
    """Statistics of one feature (state or actions) with the formula of the framework that made them."""

    stats: NormStats
    rule: str  # "openpi" | "lerobot"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown normalisation rule {self.rule!r}; valid: {RULES}")

    @property
    def dim(self) -> int:
        """Number of normalised dimensions."""
        return self.stats.dim

    def _denominator(self, d: int) -> np.ndarray:
        s = self.stats
        if s.kind is NormKind.MEAN_STD:
            return s.b[:d] + s.eps
        width = s.b[:d] - s.a[:d]
        if self.rule == "openpi":
            return width + s.eps
        return np.where(width == 0, s.eps, width)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Raw ``(..., d)`` -> normalised, d <= dim (openpi cuts the stats to the input)."""
        x = np.asarray(x, dtype=np.float64)
        d = x.shape[-1]
        if d > self.dim:
            raise NormStatsError(f"values have {d} dims but the statistics only {self.dim}")
        den = self._denominator(d)
        if self.stats.kind is NormKind.MEAN_STD:
            return (x - self.stats.a[:d]) / den
        return 2.0 * (x - self.stats.a[:d]) / den - 1.0

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        """Normalised ``(..., dim)`` -> raw (the caller cuts the model's padded output to ``dim`` first)."""
        y = np.asarray(y, dtype=np.float64)
        if y.shape[-1] != self.dim:
            raise NormStatsError(f"values have {y.shape[-1]} dims but the statistics {self.dim}")
        den = self._denominator(self.dim)
        if self.stats.kind is NormKind.MEAN_STD:
            return y * den + self.stats.a
        return (y + 1.0) * den / 2.0 + self.stats.a


@dataclass(frozen=True)
class Pi0Norm:
    """State and action normalisation of one checkpoint."""

    state: FeatureNorm
    actions: FeatureNorm
    source: str




def _feature(kind: NormKind, values: Mapping[str, Any], *, eps: float, rule: str, source: str,
             family: str) -> FeatureNorm:
    try:
        stats = NormStats.from_mapping(kind, values, eps=eps, source=source)
    except NormStatsError as exc:
        raise NormStatsError(f"{exc}. {family} expects {kind.value} statistics here; these are not them "
                             "(wrong file, or stats of another model type)") from None
    return FeatureNorm(stats.expect(kind, family), rule)


def find_openpi_stats(checkpoint: Path, asset_id: str) -> Path:
    """``<checkpoint>/assets/<asset_id>/norm_stats.json``, where openpi's ``create_trained_policy`` reads it."""
    assets = checkpoint / "assets"
    file = assets / asset_id / "norm_stats.json"
    if file.is_file():
        return file
    found = sorted(str(p.parent.relative_to(assets)) for p in assets.rglob("norm_stats.json")) if assets.is_dir() else []
    raise CheckpointError(
        f"{file} is missing (asset ids present: {found}). openpi's converter often does not copy assets/ "
        "(openpi #638): copy <jax checkpoint>/assets into the converted dir, or set policy.asset_id to the "
        "one the checkpoint was trained with")


def load_openpi_stats(file: Path, kind: NormKind, family: str) -> Pi0Norm:
    """openpi ``{"norm_stats": {"state": {...}, "actions": {...}}}``."""
    raw = read_json(file, "openpi normalisation statistics")
    table = raw.get("norm_stats") if isinstance(raw, dict) else None
    if not isinstance(table, dict) or not all(isinstance(table.get(k), dict) for k in ("state", "actions")):
        raise NormStatsError(f"{file}: expected {{'norm_stats': {{'state': ..., 'actions': ...}}}}")
    feats = {k: _feature(kind, table[k], eps=OPENPI_EPS, rule="openpi", source=f"{file}:{k}", family=family)
             for k in ("state", "actions")}
    return Pi0Norm(feats["state"], feats["actions"], str(file))


def pipeline_step(pipeline: Path, registry_name: str) -> dict[str, Any]:
    """The one step of a LeRobot processor pipeline file registered as ``registry_name``."""
    raw = read_json(pipeline, "LeRobot processor pipeline")
    steps = raw.get("steps") if isinstance(raw, dict) else None
    if not isinstance(steps, list):
        raise CheckpointError(f"{pipeline}: expected a processor pipeline with a 'steps' list")
    found = [s for s in steps if isinstance(s, dict) and s.get("registry_name") == registry_name]
    if len(found) != 1:
        raise CheckpointError(f"{pipeline}: expected one {registry_name!r} step, found {len(found)}")
    return found[0]


def _lerobot_feature(checkpoint: Path, pipeline_name: str, registry_name: str, key: str, feature_type: str,
                     kind: NormKind, family: str) -> FeatureNorm:
    from vla_gym.policies.toolkit.safe_load import load_safetensors

    pipeline = checkpoint / f"{pipeline_name}.json"
    step = pipeline_step(pipeline, registry_name)
    cfg = step.get("config") or {}
    declared = (cfg.get("norm_map") or {}).get(feature_type)
    if LEROBOT_KINDS.get(str(declared)) is not kind:
        raise NormStatsError(
            f"{pipeline}: {registry_name} normalises {feature_type} as {declared!r} but the checkpoint config "
            f"says {kind.value}; the files disagree, refusing to guess")
    state_file = step.get("state_file")
    if not state_file:
        raise NormStatsError(
            f"{pipeline}: {registry_name} has no state_file, so the checkpoint carries no statistics (a base "
            "checkpoint such as lerobot/pi05_base). Use a fine-tuned checkpoint, which ships them.")
    file = checkpoint / str(state_file)
    if file.resolve().parent != checkpoint.resolve():
        raise CheckpointError(f"{pipeline}: state_file {state_file!r} must be a file in the checkpoint dir")
    tensors = load_safetensors(file)
    values = {k[len(key) + 1:]: v.double().numpy() for k, v in tensors.items() if k.startswith(key + ".")}
    eps = float(cfg.get("eps", LEROBOT_EPS))
    return _feature(kind, values, eps=eps, rule="lerobot", source=f"{file}:{key}", family=family)


def load_lerobot_stats(checkpoint: Path, state_kind: NormKind, action_kind: NormKind, family: str) -> Pi0Norm:
    """State stats from the preprocessor's normaliser, action stats from the postprocessor's unnormaliser."""
    state = _lerobot_feature(checkpoint, "policy_preprocessor", "normalizer_processor", "observation.state",
                             "STATE", state_kind, family)
    actions = _lerobot_feature(checkpoint, "policy_postprocessor", "unnormalizer_processor", "action",
                               "ACTION", action_kind, family)
    return Pi0Norm(state, actions, str(checkpoint))
