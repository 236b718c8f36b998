"""Env frames to pi0 image inputs, as each reference makes them: openpi's client or LeRobot's eval.

Both start from the same raw OpenGL frame turned by 180 degrees (openpi's client ``raw[::-1, ::-1]``,
LeRobot's ``LiberoProcessorStep`` ``torch.flip(dims=[2, 3])``); vla_gym's frames are upright
(``raw[::-1]``), so that is ``upright[:, ::-1]``. They differ in render size and resize:

- ``openpi`` (``examples/libero/main.py`` + ``image_tools.resize_with_pad``): rendered at 256, resized
  on uint8 with PIL bilinear (antialiased) to fit 224, zero-padded, centred; the model scales
  ``uint8 / 255 * 2 - 1``.
- ``lerobot`` (``lerobot-eval`` with ``LiberoEnv``'s ``observation_height/width = 360``,
  ``envs/utils.preprocess_observation`` ``float32 / 255``, then ``_preprocess_images`` of
  ``modeling_pi0(5).py``): ``resize_with_pad_torch`` on the float [0, 1] image, i.e.
  ``F.interpolate(mode="bilinear", align_corners=False)`` with no antialiasing, ``clamp(0, 1)``,
  centred zero padding (skipped when already 224x224), then ``* 2 - 1``.

The two differ at every pixel of a downscale (PIL's bilinear filter widens with the scale, torch's
samples 2x2 neighbours), so a checkpoint is fed the pixels its own reference feeds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vla_gym.policies.toolkit.transforms import Compose, ResizeWithPad, Rotate180OfRaw
from vla_gym.policy import Observation

MODEL_IMAGE_SIZE = 224
IMAGE_PIPELINES = ("openpi", "lerobot")
RENDER_SIZE = {"openpi": 256, "lerobot": 360}
"""Env render side of each reference: openpi ``LIBERO_ENV_RESOLUTION``, LeRobot ``LiberoEnv.observation_height``."""

OPENPI_IMAGE = Compose([Rotate180OfRaw(), ResizeWithPad(MODEL_IMAGE_SIZE, MODEL_IMAGE_SIZE)])
"""Upright vla_gym frame -> the uint8 224x224 image openpi's client sends."""


def check_pipeline(name: str) -> str:
    """``name`` if it is an image pipeline, else one clear error."""
    if name not in IMAGE_PIPELINES:
        raise ValueError(f"image_pipeline must be one of {IMAGE_PIPELINES} or null, got {name!r}")
    return name


def openpi_image(frame: np.ndarray) -> torch.Tensor:
    """(3, 224, 224) float32 in [-1, 1]: openpi's client image, scaled as openpi's model input."""
    img = OPENPI_IMAGE(np.asarray(frame))
    return torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32) / 255.0 * 2.0 - 1.0)


def resize_with_pad_torch(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """LeRobot's (= openpi's PyTorch) ``resize_with_pad_torch`` for float (B, C, H, W) images in [0, 1].

    Scale ``max(w / width, h / height)``, sides truncated with ``int()``, bilinear without antialiasing,
    clamped to [0, 1], zero padding split ``divmod(extra, 2)`` (the odd pixel bottom/right).
    """
    _, _, h, w = images.shape
    ratio = max(w / width, h / height)
    new_h, new_w = int(h / ratio), int(w / ratio)
    resized = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    top, extra_h = divmod(height - new_h, 2)
    left, extra_w = divmod(width - new_w, 2)
    return F.pad(resized, (left, left + extra_w, top, top + extra_h), mode="constant", value=0.0)


def lerobot_image(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    """(3, 224, 224) float32 in [-1, 1] on ``device``: the image LeRobot's eval hands PaliGemma."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
    turned = np.ascontiguousarray(frame[:, ::-1])  # upright -> raw[::-1, ::-1]
    img = torch.from_numpy(turned).to(device).permute(2, 0, 1)[None].contiguous().to(torch.float32) / 255
    if img.shape[2:] != (MODEL_IMAGE_SIZE, MODEL_IMAGE_SIZE):
        img = resize_with_pad_torch(img, MODEL_IMAGE_SIZE, MODEL_IMAGE_SIZE)
    return (img * 2.0 - 1.0)[0]


def image_batch(observations: Sequence[Observation], cameras: Sequence[str | None], pipeline: str,
                device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per slot: images float32 (B, 3, 224, 224) in [-1, 1] and masks bool (B,), on ``device``.

    A slot with no camera is -1 everywhere with mask False (both references).
    """
    b = len(observations)
    images, masks = [], []
    for cam in cameras:
        if cam is None:
            images.append(torch.full((b, 3, MODEL_IMAGE_SIZE, MODEL_IMAGE_SIZE), -1.0, device=device))
            masks.append(torch.zeros(b, dtype=torch.bool, device=device))
            continue
        rows = []
        for obs in observations:
            try:
                frame = obs["images"][cam]
            except KeyError as exc:
                raise KeyError(f"observation has no image for camera {cam!r}; build the env from policy.inputs") from exc
            rows.append(openpi_image(frame).to(device) if pipeline == "openpi" else lerobot_image(frame, device))
        images.append(torch.stack(rows))
        masks.append(torch.ones(b, dtype=torch.bool, device=device))
    return images, masks
