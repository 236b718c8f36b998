"""Sensor noise on camera images: Gaussian pixel noise and motion blur (LIBERO-plus "noise")."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from vla_gym.perturbations._common import check_positive
from vla_gym.perturbations._images import ImageCorruption


class GaussianPixelNoise(ImageCorruption):
    """Add i.i.d. Gaussian noise to every pixel of every camera, fresh each step.

    At strength ``s`` the noise has standard deviation ``s * max_sigma`` grey levels (default
    25 of 255 at strength 1); the result is rounded and clipped to uint8. The noise sequence is
    drawn from the episode seed, so the same seed gives the same noisy frames.

    Args:
        env: An env whose observations hold ``obs["images"]``.
        strength: In [0, 1]; 0 returns the images unchanged.
        max_sigma: Noise standard deviation at strength 1, in grey levels (0-255).

    Examples:
        >>> import gymnasium as gym, vla_gym
        >>> from vla_gym.perturbations import GaussianPixelNoise
        >>> env = GaussianPixelNoise(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=0.5)
        >>> obs, info = env.reset(seed=0)
        >>> obs["images"]["agentview"].dtype
        dtype('uint8')
        >>> env.close()
    """

    salt = "gaussian_pixel_noise"

    def __init__(self, env: gym.Env, strength: float, max_sigma: float = 25.0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, max_sigma=max_sigma)
        super().__init__(env, strength)
        self.max_sigma = check_positive("max_sigma", max_sigma)

    def corrupt(self, image: np.ndarray) -> np.ndarray:
        """Noisy copy of ``image``."""
        noise = self.rng.normal(0.0, self.strength * self.max_sigma, size=image.shape)
        return np.clip(np.rint(image.astype(np.float64) + noise), 0, 255).astype(np.uint8)


def motion_blur(image: np.ndarray, length_px: int, angle_rad: float) -> np.ndarray:
    """Average ``length_px`` copies of ``image`` shifted along a line at ``angle_rad`` (edge-padded)."""
    if length_px <= 1:
        return image.copy()
    h, w = image.shape[:2]
    ts = np.linspace(-(length_px - 1) / 2, (length_px - 1) / 2, length_px)
    dx = np.rint(ts * np.cos(angle_rad)).astype(int)
    dy = np.rint(ts * np.sin(angle_rad)).astype(int)
    pad = int(np.max(np.abs(np.concatenate([dx, dy]))))
    padded = np.pad(image.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    acc = np.zeros((h, w, image.shape[2]), dtype=np.float64)
    for x, y in zip(dx, dy):
        acc += padded[pad + y:pad + y + h, pad + x:pad + x + w]
    return np.clip(np.rint(acc / length_px), 0, 255).astype(np.uint8)


class MotionBlur(ImageCorruption):
    """Linear motion blur, as from camera shake during exposure.

    At strength ``s`` the blur kernel is a line of ``1 + round(s * max_length * side)`` pixels
    (default ``max_length`` 0.05 of the image side: 11 px at 224, 4 px at 64) at an angle drawn
    once per episode from its seed.

    Args:
        env: An env whose observations hold ``obs["images"]``.
        strength: In [0, 1]; 0 returns the images unchanged.
        max_length: Blur length at strength 1 as a fraction of the image side.

    Examples:
        >>> import gymnasium as gym, vla_gym
        >>> from vla_gym.perturbations import MotionBlur
        >>> env = MotionBlur(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=1.0)
        >>> obs, info = env.reset(seed=0)
        >>> env.close()
    """

    salt = "motion_blur"

    def __init__(self, env: gym.Env, strength: float, max_length: float = 0.05) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, max_length=max_length)
        super().__init__(env, strength)
        self.max_length = check_positive("max_length", max_length)
        self.angle = 0.0

    def on_episode_start(self) -> None:
        """Draw this episode's blur direction."""
        self.angle = float(self.rng.uniform(0.0, np.pi))

    def length_px(self, side: int) -> int:
        """Kernel length in pixels for an image of ``side`` pixels."""
        return 1 + int(round(self.strength * self.max_length * side))

    def corrupt(self, image: np.ndarray) -> np.ndarray:
        """Blurred copy of ``image``."""
        return motion_blur(image, self.length_px(image.shape[0]), self.angle)
