"""Image preprocessing steps as small, named, tested callables on uint8 ``(H, W, 3)`` arrays.

Each step reproduces one reference evaluation's operation; an adapter composes the steps its
reference used (:class:`Compose`), so what a family feeds its model reads as a list:

- :class:`Rotate180OfRaw`: the LIBERO evals (OpenVLA, OFT, openpi) turn the raw OpenGL frame by
  180 degrees; from vla_gym's upright frame that is a left-right mirror.
- :class:`JpegRoundTrip`: OpenVLA's eval encodes/decodes JPEG as its training data was stored.
- :class:`TfLanczos3Resize`: TensorFlow's ``tf.image.resize(..., "lanczos3", antialias=True)``, bit-exact.
- :class:`PilResize`: PIL resampling (bicubic for CLIP-style processors).
- :class:`ResizeWithPad`: openpi's ``resize_with_pad`` (aspect kept, zero padding, PIL bilinear).
- :class:`ExpandToSquare`: LLaVA/CLIP's ``expand2square`` (pad to a square with a background colour).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image

Step = Callable[[np.ndarray], np.ndarray]
_PIL_METHODS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    return img


def _pil_method(name: str) -> int:
    try:
        return _PIL_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown resampling method {name!r}; valid: {sorted(_PIL_METHODS)}") from None


@dataclass(frozen=True)
class Rotate180OfRaw:
    """The reference evals' ``raw[::-1, ::-1]`` expressed on an upright frame (``upright = raw[::-1]``)."""

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Mirror the upright frame left-right (= the raw frame turned 180°)."""
        return np.ascontiguousarray(_check_image(img)[:, ::-1])


@dataclass(frozen=True)
class JpegRoundTrip:
    """Encode to JPEG at ``quality`` and decode as TensorFlow does (fast integer IDCT)."""

    quality: int = 95

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """JPEG-encode and decode the image as the reference pipeline does."""
        from vla_gym.policies.toolkit.tf_image import jpeg_roundtrip

        return jpeg_roundtrip(_check_image(img), quality=self.quality)


@dataclass(frozen=True)
class TfLanczos3Resize:
    """TensorFlow's antialiased lanczos3 resize to ``size`` x ``size``, rounded to uint8 as TF does."""

    size: int

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Resize with TensorFlow's lanczos3, bit-exact with the reference."""
        from vla_gym.policies.toolkit.tf_image import tf_lanczos3_resize

        return tf_lanczos3_resize(_check_image(img), self.size)


@dataclass(frozen=True)
class PilResize:
    """PIL resize to ``(width, height)`` with the named resampling filter."""

    width: int
    height: int
    method: str = "bicubic"

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Resize with PIL's resampling filter."""
        pil = Image.fromarray(_check_image(img))
        return np.asarray(pil.resize((self.width, self.height), resample=_pil_method(self.method)))


@dataclass(frozen=True)
class ResizeWithPad:
    """openpi's ``resize_with_pad``: scale to fit ``height`` x ``width`` keeping aspect, pad with zeros, centred.

    As openpi: the scale is ``max(w / width, h / height)``, the resized sides are truncated with
    ``int()``, the padding offsets are ``int((target - resized) / 2)``; an image already at the
    target size is returned unchanged.
    """

    height: int
    width: int
    method: str = "bilinear"

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Resize keeping the aspect ratio, then pad to the target size."""
        img = _check_image(img)
        h, w = img.shape[:2]
        if (h, w) == (self.height, self.width):
            return img
        ratio = max(w / self.width, h / self.height)
        new_h, new_w = int(h / ratio), int(w / ratio)
        resized = np.asarray(Image.fromarray(img).resize((new_w, new_h), resample=_pil_method(self.method)))
        out = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        top, left = max(0, int((self.height - new_h) / 2)), max(0, int((self.width - new_w) / 2))
        out[top:top + new_h, left:left + new_w] = resized
        return out


@dataclass(frozen=True)
class ExpandToSquare:
    """LLaVA's ``expand2square``: pad the shorter side to a square of ``background``, image centred.

    On uint8 frames ``background`` is the processor's ``image_mean`` scaled to 0..255
    (``int(255 * m)``, LLaVA's PIL version); on float32 ``(H, W, 3)`` images in [0, 1] it is the
    mean itself (TinyVLA's eval pads the ``/255`` float image). The output keeps the input's dtype.
    """

    background: tuple[float, float, float] = (0, 0, 0)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Pad the shorter side with ``background`` to a square, image centred."""
        img = np.asarray(img)
        if img.dtype not in (np.uint8, np.float32) or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected a uint8 or float32 (H, W, 3) image, got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        if h == w:
            return img
        side = max(h, w)
        out = np.empty((side, side, 3), dtype=img.dtype)
        out[:] = np.asarray(self.background, dtype=img.dtype)
        top, left = (side - h) // 2, (side - w) // 2
        out[top:top + h, left:left + w] = img
        return out


@dataclass(frozen=True)
class Compose:
    """Apply ``steps`` in order."""

    steps: Sequence[Step]

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Apply every step in order."""
        for step in self.steps:
            img = step(img)
        return img
