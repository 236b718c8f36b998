"""TinyVLA's eval-time inputs (``eval_real_franka.py``): images, prompt, state.

Images, per camera in the checkpoint's order: uint8 -> float ``/ 255``; the eval's centre crop to
95 % and ``torchvision`` ``Resize`` back to the original size (antialias), which ``eval_bc``
applies for the diffusion head (``rand_crop_resize = True``; ``center_crop: false`` turns it
off); ``expand2square`` padding with the processor's ``image_mean`` (floats, as the eval: not the
``int(255 m)`` of stock LLaVA); then the checkpoint's CLIP image processor
(``preprocessor_config.json``, 336 bicubic in the released bases) with ``do_rescale=False,
do_normalize=True, do_center_crop=False``. The processor is transformers' PIL-backend
``CLIPImageProcessorPil``, the code path of the transformers 4.37 ``CLIPImageProcessor`` the
original pins (its outputs equal the original eval's bit for bit on the fixtures of
tests/policies/test_tinyvla_reference.py; transformers 5's default ``CLIPImageProcessor`` is the
torchvision backend, which resizes differently). TinyVLA's training data were resized to 320 x 180 before this (``datasets.py``);
the eval does not resize, and neither does this adapter: the env renders at ``image_size``.

Prompt: ``conv_pythia`` (``conversation.py``) plus the eval's ``" <|endoftext|>"``::

    "{SYSTEM} USER: <image>\\n{instruction} ASSISTANT: <|endoftext|>"

tokenised as ``mm_utils.tokenizer_image_token`` does (text around ``<image>`` tokenised apart,
``IMAGE_TOKEN_INDEX`` in between).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_gym.policies.tinyvla.modeling import IMAGE_TOKEN_INDEX
from vla_gym.policies.toolkit.errors import CheckpointError
from vla_gym.policies.toolkit.safe_load import read_json
from vla_gym.policies.toolkit.transforms import ExpandToSquare

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
CROP_RATIO = 0.95


def conv_pythia_prompt(instruction: str) -> str:
    """The eval prompt string, exactly (``conv_pythia.get_prompt() + " <|endoftext|>"``)."""
    return f"{SYSTEM} USER: <image>\n{instruction} ASSISTANT: <|endoftext|>"


def tokenizer_image_token(prompt: str, tokenizer: Any) -> list[int]:
    """Token ids of ``prompt`` with ``IMAGE_TOKEN_INDEX`` at each ``<image>`` (``mm_utils`` semantics)."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    sep = [IMAGE_TOKEN_INDEX] * (offset + 1)
    pieces = [piece for chunk in chunks for piece in (chunk, sep)][:-1]
    for piece in pieces:
        ids.extend(piece[offset:])
    return ids


def load_image_processor(dirs: list[Path]) -> tuple[Any, Path]:
    """The PIL CLIP processor from the first ``preprocessor_config.json`` in ``dirs``."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    for d in dirs:
        file = d / "preprocessor_config.json"
        if file.is_file():
            cfg = read_json(file, "CLIP preprocessor config")
            kw = {k: cfg[k] for k in ("size", "crop_size", "resample", "image_mean", "image_std", "do_resize",
                                      "do_normalize", "do_convert_rgb") if k in cfg}
            if isinstance(kw.get("size"), int):
                kw["size"] = {"shortest_edge": kw["size"]}
            if isinstance(kw.get("crop_size"), int):
                kw["crop_size"] = {"height": kw["crop_size"], "width": kw["crop_size"]}
            try:
                return CLIPImageProcessorPil(**kw), file
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{file}: not a CLIP image processor config ({exc})") from exc
    raise CheckpointError(
        f"preprocessor_config.json is missing from {[str(d) for d in dirs]}; TinyVLA's train.sh copies "
        "llava-pythia/preprocessor_config.json into every checkpoint dir: copy it from the base VLM dir"
    )


def processor_size(processor: Any) -> int:
    """Side of the square image the processor outputs (``size.shortest_edge`` after expand2square)."""
    size = processor.size
    side = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
    if side is None:
        side = size["height"] if isinstance(size, dict) else size.height
    return int(side)


def center_crop_resize(img: torch.Tensor, ratio: float = CROP_RATIO) -> torch.Tensor:
    """The eval's crop to ``ratio`` of each side (centred) and antialiased resize back: (3, H, W) float."""
    from torchvision.transforms import functional as tvf

    h, w = img.shape[-2:]
    crop = img[..., int(h * (1 - ratio) / 2): int(h * (1 + ratio) / 2),
               int(w * (1 - ratio) / 2): int(w * (1 + ratio) / 2)]
    return tvf.resize(crop, [h, w], antialias=True)


def image_to_pixels(img: np.ndarray, processor: Any, center_crop: bool = True) -> torch.Tensor:
    """One upright uint8 (H, W, 3) frame -> the model's (3, S, S) float32 input."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
    if center_crop:
        t = center_crop_resize(t)
    sq = ExpandToSquare(tuple(processor.image_mean))(t.permute(1, 2, 0).numpy())  # float pad, as the eval
    out = processor.preprocess(sq, return_tensors="pt", do_normalize=True, do_rescale=False,
                               do_center_crop=False)["pixel_values"]
    return out[0].to(torch.float32)
