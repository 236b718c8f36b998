"""Write ``tf_lanczos3.npz``: TensorFlow's own lanczos3 weights and an image full of rounding ties.

TensorFlow is not a vla_gym dependency; run this in a throwaway environment::

    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu==2.21.0 numpy
    /tmp/tf/bin/python tests/policies/data/make_tf_lanczos3_fixture.py tests/policies/data/tf_lanczos3.npz

Contents (all read by ``tests/policies/test_openvla.py``):

- ``w_<in>_<out>_{dst,src,val}``: every nonzero weight of ``tf.image.resize(..., "lanczos3",
  antialias=True)`` from ``in`` to ``out`` pixels, read out of TF by resizing one-hot float32
  columns (the output is then ``0 + w * 1 = w`` exactly).
- ``tie_image`` (256, 256, 3) uint8: a grey image with small random patches, each chosen so
  that TF's float32 result at one output pixel is exactly ``n + 0.5`` in every channel;
  ``tie_coords`` (N, 3) and ``tie_values`` (N,) are those pixels and TF's values; ``tie_tf``
  (224, 224, 3) uint8 is TF's whole output after the reference's round + clip + cast. Any weight
  that is off by one ulp moves a tie off ``.5`` and flips its rounding (half to even).
"""

from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf

SIZES = [(256, 224), (256, 160), (128, 224), (200, 224), (300, 224), (480, 224), (512, 224), (640, 224),
         (224, 224)]
TIE_IN, TIE_OUT = 256, 224
GRID = range(4, TIE_OUT, 16)  # output pixels whose input patches never overlap (7 taps, 18 px apart)
BACKGROUND = 128


def tf_weights(n_in: int, n_out: int) -> np.ndarray:
    """Dense (n_out, n_in) float32 weights of TF's lanczos3 + antialias resize."""
    eye = np.eye(n_in, dtype=np.float32)[:, :, None, None]  # batch of one-hot columns
    out = tf.image.resize(eye, (n_out, 1), method="lanczos3", antialias=True).numpy()[:, :, 0, 0]
    return np.ascontiguousarray(out.T)


def tf_resize_float(img: np.ndarray, size: int) -> np.ndarray:
    """The reference call, before rounding: float32 (size, size, C)."""
    return tf.image.resize(img, (size, size), method="lanczos3", antialias=True).numpy()


def tf_resize_uint8(img: np.ndarray, size: int) -> np.ndarray:
    """The reference's resize + round + clip + cast (OpenVLA / OFT ``resize_image_for_policy``)."""
    out = tf.image.resize(img, (size, size), method="lanczos3", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8).numpy()


def simulate(patches: np.ndarray, wr: np.ndarray, wc: np.ndarray) -> np.ndarray:
    """TF's GatherRows then GatherColumns for one output pixel, float32, in TF's order.

    ``patches`` (N, len(wr), len(wc)) uint8 -> (N,) float32.
    """
    p = patches.astype(np.float32)
    inter = p[:, 0, :] * wr[0]
    for k in range(1, len(wr)):
        inter = inter + p[:, k, :] * wr[k]
    out = inter[:, 0] * wc[0]
    for j in range(1, len(wc)):
        out = out + inter[:, j] * wc[j]
    return out


def find_tie(rng: np.random.Generator, wr: np.ndarray, wc: np.ndarray) -> np.ndarray:
    """A random uint8 patch whose simulated output is exactly ``n + 0.5``."""
    while True:
        patches = rng.integers(0, 256, (200_000, len(wr), len(wc)), dtype=np.uint8)
        value = simulate(patches, wr, wc)
        hit = np.flatnonzero((value - np.floor(value) == np.float32(0.5)) & (value > 0) & (value < 255))
        if hit.size:
            return patches[hit[0]]


def main(path: str) -> None:
    """Compute everything and write the npz."""
    arrays: dict[str, np.ndarray] = {}
    for n_in, n_out in SIZES:
        w = tf_weights(n_in, n_out)
        dst, src = np.nonzero(w)
        arrays[f"w_{n_in}_{n_out}_dst"] = dst.astype(np.int16)
        arrays[f"w_{n_in}_{n_out}_src"] = src.astype(np.int16)
        arrays[f"w_{n_in}_{n_out}_val"] = w[dst, src]

    w = tf_weights(TIE_IN, TIE_OUT)
    rng = np.random.default_rng(2026)
    image = np.full((TIE_IN, TIE_IN, 3), BACKGROUND, dtype=np.uint8)
    planned = []
    for y in GRID:
        for x in GRID:
            rows, cols = np.flatnonzero(w[y]), np.flatnonzero(w[x])
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            for c in range(3):
                image[box + (c,)] = find_tie(rng, w[y, rows], w[x, cols])
                planned.append((y, x, c))
    out = tf_resize_float(image, TIE_OUT)
    ties = [(y, x, c) for y, x, c in planned if out[y, x, c] - np.floor(out[y, x, c]) == np.float32(0.5)]
    if len(ties) != len(planned):
        raise SystemExit(f"only {len(ties)} of {len(planned)} simulated ties are ties in TF")
    coords = np.array(ties, dtype=np.int16)
    arrays["tie_image"] = image
    arrays["tie_coords"] = coords
    arrays["tie_values"] = out[coords[:, 0], coords[:, 1], coords[:, 2]].astype(np.float32)
    arrays["tie_tf"] = tf_resize_uint8(image, TIE_OUT)
    np.savez_compressed(path, **arrays)
    print(f"{path}: {len(ties)} ties, TF {tf.__version__}")


if __name__ == "__main__":
    main(sys.argv[1])
