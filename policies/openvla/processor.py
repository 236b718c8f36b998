"""Prompt, tokenizer and per-backbone pixel normalisation (the release's ``PrismaticProcessor``).

The tokenizer is read from the release's ``tokenizer.json`` with the ``tokenizers`` library
(what ``LlamaTokenizerFast`` wraps), so no transformers tokenizer class and no remote code are
involved. ``<s>`` is prepended when ``tokenizer_config.json`` has ``add_bos_token`` (default,
as Llama). The pixel transform reads ``preprocessor_config.json`` and applies, per tower,
resize (PIL bicubic; a no-op for the 224x224 reference image), ``to_tensor`` and normalise.

Normalisation values: the release's ``preprocessor_config.json`` holds two sets. ``means`` /
``stds`` are timm's (DINOv2 ``[0.485, 0.456, 0.406]`` / ``[0.229, 0.224, 0.225]``, SigLIP 0.5);
``tvf_normalize_params`` (one ``{"mean", "std", "inplace"}`` per tower) is what
``PrismaticImageProcessor.apply_transform`` passes to ``torchvision``'s ``normalize``, and in the
release its DINOv2 values are rounded through bfloat16 (``0.484375``, ...). The processor is
built from the JSON with every key set as an attribute, so the stored ``tvf_normalize_params``
win; we use them too, and fall back to ``means`` / ``stds`` (with a warning) only when absent.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from vla_gym.policies.openvla.errors import CheckpointError

logger = logging.getLogger(__name__)

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
EMPTY_PIECE = "\u2581"  # sentencepiece "▁": token 29871 in the Llama-2 vocabulary


def build_prompt(instruction: str) -> str:
    """The OpenVLA prompt; the instruction is lower-cased as in the reference eval."""
    return PROMPT_TEMPLATE.format(instruction=instruction.lower())


@dataclass
class PromptTokenizer:
    """Llama tokenizer from ``tokenizer.json`` plus the reference's prompt conventions."""

    tokenizer: object
    bos_id: int | None
    eos_id: int | None
    empty_id: int

    @classmethod
    def from_dir(cls, path: Path) -> PromptTokenizer:
        """Load ``tokenizer.json`` (+ ``tokenizer_config.json``) from a checkpoint directory."""
        from tokenizers import Tokenizer

        tj = path / "tokenizer.json"
        if not tj.is_file():
            raise CheckpointError(
                f"{tj} is missing; OpenVLA releases ship tokenizer.json next to tokenizer.model. "
                "Copy it from the release (vla_gym does not run sentencepiece conversion)."
            )
        try:
            tok = Tokenizer.from_file(str(tj))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise CheckpointError(f"{tj} could not be parsed ({exc}); re-download it") from exc
        cfg: dict = {}
        tc = path / "tokenizer_config.json"
        if tc.is_file():
            try:
                cfg = json.loads(tc.read_text())
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{tc} is not valid JSON ({exc}); re-download it") from exc

        def token_id(name: str, default: str) -> int | None:
            value = cfg.get(name, default)
            if isinstance(value, dict):
                value = value.get("content")
            return tok.token_to_id(value) if value else None

        bos = token_id("bos_token", "<s>") if cfg.get("add_bos_token", True) else None
        empty = tok.token_to_id(EMPTY_PIECE)
        if empty is None:
            raise CheckpointError(f"{tj}: the vocabulary has no {EMPTY_PIECE!r} piece (Llama id 29871)")
        return cls(tokenizer=tok, bos_id=bos, eos_id=token_id("eos_token", "</s>"), empty_id=empty)

    def encode_prompt(self, instruction: str) -> list[int]:
        """Token ids of the prompt: ``<s>`` + pieces + the empty piece (added when not last)."""
        ids = list(self.tokenizer.encode(build_prompt(instruction), add_special_tokens=False).ids)
        if self.bos_id is not None:
            ids = [self.bos_id] + ids
        if ids[-1] != self.empty_id:
            ids.append(self.empty_id)
        return ids


@dataclass
class PixelTransform:
    """Per-tower resize + normalise, towers concatenated on channels (6 x H x W for DINO+SigLIP)."""

    sizes: list[int]
    means: list[list[float]]
    stds: list[list[float]]

    @classmethod
    def from_dir(cls, path: Path, n_towers: int) -> PixelTransform:
        """Read ``preprocessor_config.json``; error if absent or inconsistent with the model."""
        pc = path / "preprocessor_config.json"
        if not pc.is_file():
            raise CheckpointError(
                f"{pc} is missing; it holds the per-backbone mean/std. Copy it from the release."
            )
        try:
            cfg = json.loads(pc.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{pc} is not valid JSON ({exc}); re-download it") from exc
        strategy = cfg.get("image_resize_strategy", "resize-naive")
        if strategy not in ("resize-naive", "resize-crop", "letterbox"):
            raise CheckpointError(f"{pc}: image_resize_strategy {strategy!r} unknown")
        sizes = [int(s[-1]) for s in cfg.get("input_sizes", [])]
        if len(sizes) != n_towers:
            raise CheckpointError(f"{pc}: expected {n_towers} entries in input_sizes, got {len(sizes)}")
        interps = cfg.get("interpolations") or ["bicubic"] * n_towers
        if any(i != "bicubic" for i in interps):
            raise CheckpointError(f"{pc}: interpolations {interps} not supported (releases use bicubic)")
        means, stds = normalize_params(cfg, n_towers, str(pc))
        return cls(sizes=sizes, means=means, stds=stds)

    @property
    def channels(self) -> int:
        """Output channels: 3 per tower."""
        return 3 * len(self.sizes)

    @cached_property
    def _lut(self) -> np.ndarray:
        """(3 * towers, 256) float32: every uint8 value through ``to_tensor`` + normalize.

        Built with exactly the float32 ops of :meth:`_call_numpy` (``x / 255``, then
        ``(x - mean) / std``), so looking pixels up in it gives bit-identical results.
        """
        unit = np.arange(256, dtype=np.uint8).astype(np.float32) / np.float32(255)
        rows = []
        for mean, std in zip(self.means, self.stds, strict=True):
            m = np.asarray(mean, dtype=np.float32)[:, None]
            s = np.asarray(std, dtype=np.float32)[:, None]
            rows.append((unit[None, :] - m) / s)
        return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.float32)

    def into(self, image: np.ndarray, out: np.ndarray) -> bool:
        """Write ``self(image)`` into ``out`` (float32 (3 * towers, S, S)); False if ``image``
        needs a resize for some tower (then nothing is written; use :meth:`__call__`)."""
        size = image.shape[0]
        if image.ndim != 3 or image.shape[1:] != (size, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a square (S, S, 3) uint8 image, got {image.dtype} {image.shape}")
        if any(s != size for s in self.sizes):
            return False
        if out.shape != (self.channels, size, size) or out.dtype != np.float32:
            expected = (self.channels, size, size)
            raise ValueError(f"out must be float32 {expected}, got {out.dtype} {out.shape}")
        from vla_gym.policies.toolkit.tf_image import numba_kernels

        kernels = numba_kernels()
        if kernels is not None:
            kernels[2](np.ascontiguousarray(image), self._lut, out)
        else:  # pragma: no cover - numba comes with robosuite
            for ch in range(self.channels):
                np.take(self._lut[ch], image[..., ch % 3], out=out[ch])
        return True

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) square image -> float32 (3 * towers, S, S)."""
        if image.shape[0] != image.shape[1]:
            raise ValueError(f"expected a square image, got {image.shape}")
        square_rgb = image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        if square_rgb and all(s == image.shape[0] for s in self.sizes):
            out = torch.empty((self.channels, image.shape[0], image.shape[1]), dtype=torch.float32)
            self.into(image, out.numpy())
            return out
        return self._call_numpy(image)

    def _call_numpy(self, image: np.ndarray) -> torch.Tensor:
        """Reference implementation (any size: PIL bicubic resize per tower as the release)."""
        if image.shape[0] != image.shape[1]:
            raise ValueError(f"expected a square image, got {image.shape}")
        out = []
        scaled: dict[int, np.ndarray] = {}
        for size, mean, std in zip(self.sizes, self.means, self.stds, strict=True):
            if size not in scaled:
                img = image
                if img.shape[0] != size:  # PIL bicubic, as torchvision's resize of a PIL image
                    img = np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))
                # to_tensor: float32 x / 255 (same IEEE ops as torch's div), channels first
                scaled[size] = np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32) / np.float32(
                    255
                )
            m = np.asarray(mean, dtype=np.float32)[:, None, None]
            s = np.asarray(std, dtype=np.float32)[:, None, None]
            out.append((scaled[size] - m) / s)  # torchvision normalize: (x - mean) / std
        return torch.from_numpy(np.concatenate(out, axis=0))


def _triples(values: object, what: str, source: str, n_towers: int) -> list[list[float]]:
    """``n_towers`` lists of 3 finite numbers (nonzero for a std), as floats; else an error."""

    def valid(entry: object) -> bool:
        return (
            isinstance(entry, list)
            and len(entry) == 3
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in entry)
            and ("std" not in what or all(v != 0 for v in entry))
        )

    if not (isinstance(values, list) and len(values) == n_towers and all(valid(e) for e in values)):
        raise CheckpointError(
            f"{source}: {what} must be {n_towers} lists of 3 numbers (one per tower), got {values!r}"
        )
    return [[float(v) for v in entry] for entry in values]


def normalize_params(cfg: dict, n_towers: int, source: str) -> tuple[list[list[float]], list[list[float]]]:
    """Per-tower (means, stds) the release's processor normalises with.

    ``tvf_normalize_params`` when present (what ``PrismaticImageProcessor`` uses); otherwise
    ``means`` / ``stds``, with a warning: on a release those differ (DINOv2 by up to 0.008 per
    channel after normalisation), so the pixels would not be the reference's.
    """
    tvf = cfg.get("tvf_normalize_params")
    if tvf is not None:
        if not (isinstance(tvf, list) and all(isinstance(p, dict) for p in tvf)):
            raise CheckpointError(f"{source}: tvf_normalize_params must be a list of {{mean, std}} dicts")
        means = _triples([p.get("mean") for p in tvf], "tvf_normalize_params mean", source, n_towers)
        stds = _triples([p.get("std") for p in tvf], "tvf_normalize_params std", source, n_towers)
        return means, stds
    means = _triples(cfg.get("means"), "means", source, n_towers)
    stds = _triples(cfg.get("stds"), "stds", source, n_towers)
    logger.warning(
        "%s has no tvf_normalize_params (what the release's PrismaticImageProcessor normalises with); "
        "normalising with its means/stds instead",
        source,
    )
    return means, stds
