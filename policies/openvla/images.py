"""The reference LIBERO image path of OpenVLA / OpenVLA-OFT, in numpy + PIL (no TensorFlow).

Reference (``experiments/robot/libero/libero_utils.py`` and ``openvla_utils.py``)::

    img = obs["agentview_image"][::-1, ::-1]          # raw OpenGL frame turned 180 degrees
    img = tf.image.encode_jpeg(img); img = tf.io.decode_image(img)       # JPEG round trip, q=95
    img = tf.image.resize(img, (224, 224), "lanczos3", antialias=True)   # then round + clip
    # fine-tunes trained with random crops: tf.image.crop_and_resize of the central
    # sqrt(0.9) x sqrt(0.9) box back to 224 (bilinear), through float [0, 1]

vla_gym envs emit *upright* frames (``raw[::-1]``). ``raw[::-1, ::-1] == upright[:, ::-1]``, so
the adapter only mirrors left-right (:func:`reference_orientation`).

The TensorFlow ops themselves (bit-exact JPEG, lanczos3, crop) live in
:mod:`vla_gym.policies.toolkit.tf_image`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vla_gym.policies.toolkit.tf_image import (
    CROP_SCALE,
    center_crop_from_transposed,
    jpeg_roundtrip,
    jpeg_roundtrip_pil,
    lanczos3_resize_transposed,
    numba_kernels,
    tf_center_crop_resize,
    tf_lanczos3_resize_numpy,
)

__all__ = ["CROP_SCALE", "reference_image", "reference_orientation"]


def reference_orientation(upright: np.ndarray) -> np.ndarray:
    """Turn an upright env frame into what the reference eval fed the model.

    The reference rotates the raw (upside-down) frame by 180 degrees: ``raw[::-1, ::-1]``.
    With ``upright = raw[::-1]`` that is ``upright[:, ::-1]`` (a left-right mirror).
    """
    return np.ascontiguousarray(upright[:, ::-1])


def reference_image(
    upright: np.ndarray, size: int = 224, center_crop: bool = True, jpeg: bool = True
) -> np.ndarray:
    """Full reference path from an upright env frame to the 224x224 uint8 image the model sees."""
    if upright.dtype != np.uint8 or upright.ndim != 3 or upright.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {upright.dtype} {upright.shape}")
    if jpeg and upright.flags.c_contiguous:  # PIL's mirror (= reference_orientation) is ~4x faster
        img = jpeg_roundtrip_pil(Image.fromarray(upright).transpose(Image.FLIP_LEFT_RIGHT))
    elif jpeg:
        img = jpeg_roundtrip(reference_orientation(upright))
    else:
        img = reference_orientation(upright)
    if img.shape[:2] == (size, size) or numba_kernels() is None:
        img = tf_lanczos3_resize_numpy(img, size)
        return tf_center_crop_resize(img) if center_crop else img
    img_t = lanczos3_resize_transposed(img, size)  # (W, H, C): the crop reads it in this layout, no transpose
    if center_crop:
        return center_crop_from_transposed(img_t, CROP_SCALE)
    return np.ascontiguousarray(img_t.transpose(1, 0, 2))
