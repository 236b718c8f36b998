"""JPEG compression of camera images at a quality level (not in LIBERO-plus)."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np

from vla_gym.perturbations._images import ImageCorruption


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode ``image`` as JPEG at ``quality`` with PIL (4:2:0 chroma) and decode it."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


class JpegCompression(ImageCorruption):
    """JPEG-compress every camera image, as a real camera stream or a lossy link would.

    Strength ``s`` maps to quality ``round(100 - s * (100 - min_quality))`` (default
    ``min_quality`` 10: quality 55 at 0.5, 10 at 1). Strength 0 skips the codec entirely
    (exact identity); an explicit ``quality`` overrides the mapping and applies even at
    strength 0. Quality 100 is close to, not exactly, the identity (a few grey levels: chroma
    subsampling and rounding).

    Args:
        env: An env whose observations hold ``obs["images"]``.
        strength: In [0, 1].
        min_quality: JPEG quality at strength 1 (1-100).
        quality: Fixed JPEG quality (1-100) instead of the strength mapping.

    Examples:
        >>> import gymnasium as gym, vla_gym
        >>> from vla_gym.perturbations import JpegCompression
        >>> env = JpegCompression(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=1.0)
        >>> obs, info = env.reset(seed=0)
        >>> env.quality_level()
        10
        >>> env.close()
    """

    salt = "jpeg"

    def __init__(self, env: gym.Env, strength: float, min_quality: int = 10, quality: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, min_quality=min_quality, quality=quality)
        super().__init__(env, strength)
        for name, q in (("min_quality", min_quality), ("quality", quality)):
            if q is not None and not 1 <= int(q) <= 100:
                raise ValueError(f"{name} must be a JPEG quality in 1..100, got {q!r}")
        self.min_quality = int(min_quality)
        self.quality = None if quality is None else int(quality)

    def active(self) -> bool:
        """Compress when strength > 0 or a quality is given."""
        return self.quality is not None or self.strength > 0

    def quality_level(self) -> int:
        """The JPEG quality used for every image."""
        if self.quality is not None:
            return self.quality
        return int(round(100 - self.strength * (100 - self.min_quality)))

    def corrupt(self, image: np.ndarray) -> np.ndarray:
        """JPEG round trip of ``image``."""
        return jpeg_roundtrip(image, self.quality_level())
