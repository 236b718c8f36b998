"""TensorFlow's image ops as reference evals ran them, in numpy + PIL + numba (no TensorFlow).

- :func:`jpeg_roundtrip`: ``tf.image.encode_jpeg`` + ``tf.io.decode_image`` (OpenVLA's eval stores
  and reads its frames as its RLDS training data did), bit for bit.
- :func:`tf_lanczos3_resize`: ``tf.image.resize(img, (S, S), "lanczos3", antialias=True)`` + round.
- :func:`tf_center_crop_resize`: ``tf.image.crop_and_resize`` of the central ``sqrt(s) x sqrt(s)``
  box back to the input size (bilinear), through float [0, 1].

``tf.image.resize(lanczos3, antialias)`` and ``tf.image.crop_and_resize`` are re-implemented
from TensorFlow's kernels (``scale_and_translate_op.cc``, ``crop_and_resize_op.cc``) as
separable weight matrices; PIL's LANCZOS is a different filter (fixed-point, other support)
and is not used. The lanczos weights are computed with the C library's ``sinf``, as TF's
``LanczosKernelFunc`` does (NumPy's float32 ``sin`` differs from it in the last bit on 233 of
the 1524 weights of 256 -> 224, which flips pixels that TF computes as exactly ``n + 0.5``).
Against TensorFlow 2.21 the weights are equal bit for bit, and so are the outputs, including on
an image built to hit 588 such rounding ties (``tests/policies/data/tf_lanczos3.npz``).

Speed: the resize and crop run as numba kernels (:func:`numba_kernels`) that perform exactly the
float32 operations of the numpy versions (``*_numpy``, kept as the readable reference and as a
fallback), in the same order, without fastmath (no FMA contraction, no reassociation), so the
output is bit-identical; ``tests/policies/test_openvla.py`` checks that on random frames. They are
compiled on first use (about 2 s) and cached on disk next to this file when it is writable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import logging
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

CROP_SCALE = 0.9  # area kept by the center crop of OpenVLA's random-crop fine-tunes (the default)
JPEG_QUALITY = 95  # tf.image.encode_jpeg default


def jpeg_roundtrip(img: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """JPEG encode + decode exactly as ``tf.image.encode_jpeg`` / ``tf.io.decode_image`` do.

    Encoding: libjpeg-turbo (through PIL) at quality 95, 4:2:0 chroma: the same entropy-coded
    data as TensorFlow (only the JFIF density header differs). Decoding: TensorFlow's default
    is the *fast integer* IDCT with fancy upsampling; PIL and OpenCV use the accurate IDCT and
    differ from it by up to 8-9 levels on 74 % of pixels, so decode with ``simplejpeg``
    (``fastdct=True, fastupsample=False``), which reproduces TensorFlow bit for bit.
    """
    return jpeg_roundtrip_pil(Image.fromarray(img), quality)


def jpeg_roundtrip_pil(pil: Image.Image, quality: int = JPEG_QUALITY) -> np.ndarray:
    """JPEG-encode and decode a PIL image at ``quality`` as TensorFlow does (integer IDCT)."""
    import simplejpeg

    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality, subsampling="4:2:0")
    return simplejpeg.decode_jpeg(buf.getvalue(), colorspace="RGB", fastdct=True, fastupsample=False)


@lru_cache(maxsize=1)
def _libm_sinf() -> Callable[[float], float] | None:
    """The C library's ``sinf``, or None where no libm can be loaded.

    TensorFlow's ``LanczosKernelFunc`` calls ``std::sin`` on a float, i.e. libm's ``sinf``.
    NumPy's float32 ``sin`` is its own SIMD code, and glibc's ``sinf`` is not correctly
    rounded either (with float64 ``sin`` rounded to float32, 105 of the 1524 weights of
    256 -> 224 still differ from TF's), so only calling ``sinf`` itself reproduces TF.
    """
    name = ctypes.util.find_library("m")
    try:
        fn = ctypes.CDLL(name).sinf if name else None
    except (OSError, AttributeError):
        fn = None
    if fn is None:
        return None
    fn.restype = ctypes.c_float
    fn.argtypes = [ctypes.c_float]
    return fn


def sinf(x: np.ndarray) -> np.ndarray:
    """Element-wise C ``sinf`` of a float32 array (float32 out), as TF's kernels compute it.

    Without a loadable libm, falls back to float64 ``sin`` rounded to float32 (within one ulp
    of ``sinf``; a warning says TF's weights may then differ in the last bit).
    """
    x = np.asarray(x, dtype=np.float32)
    fn = _libm_sinf()
    if fn is None:
        _warn_no_libm()
        return np.sin(x.astype(np.float64)).astype(np.float32)
    return np.array([fn(float(v)) for v in x.ravel()], dtype=np.float32).reshape(x.shape)


@lru_cache(maxsize=1)
def _warn_no_libm() -> None:
    logger.warning(
        "no C math library could be loaded: lanczos3 weights use float64 sin rounded to float32, "
        "which may differ from TensorFlow's sinf in the last bit"
    )


def _lanczos3(x: np.ndarray) -> np.ndarray:
    """TensorFlow's ``LanczosKernelFunc`` (radius 3) on float32 ``x``, op for op.

    ``3 * sinf(pi x) * sinf(pi x / 3) / (pi * pi * x * x)`` left to right in float32 with TF's
    float pi; 1 where ``|x| <= 1e-3`` (a double comparison in C++), 0 where ``|x| > 3``.
    """
    x = np.abs(np.asarray(x, dtype=np.float32))
    pi = np.float32(3.14159265359)
    r = np.float32(3.0)
    inside = (x.astype(np.float64) > 1e-3) & (x <= r)
    out = np.where(x > r, np.float32(0.0), np.float32(1.0)).astype(np.float32)
    xi = x[inside]
    px = pi * xi
    out[inside] = r * sinf(px) * sinf(px / r) / (pi * pi * xi * xi)
    return out


@lru_cache(maxsize=16)
def lanczos3_spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel: source indices (out, span) and float32 weights of TF's lanczos3 + antialias.

    Follows ``ComputeSpansCore`` in TensorFlow's ``scale_and_translate_op.cc``: sample at
    ``(x + 0.5) / scale``, kernel widened by ``1 / scale`` when downscaling, weights
    normalised by their float32 sum. Padding taps have weight 0 and index 0. Kernel values use
    libm's ``sinf`` (:func:`sinf`), so the weights equal TF's bit for bit (tested against weights
    read out of TensorFlow 2.21).
    """
    scale = np.float32(out_size) / np.float32(in_size)  # float32, as tf.image.resize passes it
    inv_scale = np.float32(1.0 / float(scale))  # C++ `1.0 / scale`: a double division, then float
    kernel_scale = max(inv_scale, np.float32(1.0))  # antialias
    radius = np.float32(3.0)
    span = min(2 * int(math.ceil(radius * kernel_scale)) + 1, in_size)
    index = np.zeros((out_size, span), dtype=np.int64)
    weight = np.zeros((out_size, span), dtype=np.float32)
    for x in range(out_size):
        sample = (np.float32(x) + np.float32(0.5)) * inv_scale
        if sample < 0 or sample > in_size:
            continue
        start = max(int(math.ceil(sample - radius * kernel_scale - np.float32(0.5))), 0)
        end = min(int(math.floor(sample + radius * kernel_scale - np.float32(0.5))), in_size - 1) + 1
        src = np.arange(start, end, dtype=np.float32)
        w = _lanczos3((src + np.float32(0.5) - sample) * (np.float32(1.0) / kernel_scale))
        total = np.float32(0.0)
        for value in w:  # sequential float32 sum, as the C++ loop
            total = np.float32(total + value)
        if abs(total) >= 1000.0 * np.finfo(np.float32).tiny:
            index[x, : end - start] = np.arange(start, end)
            weight[x, : end - start] = w * (np.float32(1.0) / total)
    return index, weight


def _gather_rows(src: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """out += w_k * src[idx_k] (k = 0..span-1) in float32: the accumulation order of TF's GatherSpans.

    ``src`` may be uint8: the row gather then moves 4x fewer bytes, and uint8 -> float32 inside
    the multiply is exact, so the result is the same as gathering a float32 copy.
    """
    shape = (index.shape[0],) + src.shape[1:]
    out = np.empty(shape, dtype=np.float32)
    term = np.empty(shape, dtype=np.float32)
    np.multiply(src[index[:, 0]], weight[:, 0, None, None], out=out)
    for k in range(1, index.shape[1]):
        np.multiply(src[index[:, k]], weight[:, k, None, None], out=term)
        out += term
    return out


def _lanczos3_float_t(img: np.ndarray, size: int) -> np.ndarray:
    """TF's float32 lanczos3 result before rounding, *transposed* to (W, H, C).

    Rows first, then columns, each a short weighted sum over the kernel's taps (pure numpy:
    no BLAS, whose threads fight torch's OpenMP pool on small machines).
    """
    h, w = img.shape[:2]
    rows = _gather_rows(img, *lanczos3_spans(h, size))
    # Second pass along width on the transposed copy: contiguous row gathers are much faster.
    return _gather_rows(np.ascontiguousarray(rows.transpose(1, 0, 2)), *lanczos3_spans(w, size))


def tf_lanczos3_resize_float(img: np.ndarray, size: int) -> np.ndarray:
    """``tf.image.resize(img, (size, size), "lanczos3", antialias=True)``: float32, not rounded."""
    return np.ascontiguousarray(_lanczos3_float_t(img, size).transpose(1, 0, 2))


def tf_lanczos3_resize_numpy(img: np.ndarray, size: int) -> np.ndarray:
    """``tf.image.resize(img, (size, size), "lanczos3", antialias=True)`` then round + clip to uint8.

    The reference rounds with ``tf.round`` (half to even, as ``np.round``), clips to [0, 255]
    and casts.
    """
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img.copy()  # scale 1: TF's weights round back to the input exactly (checked with TF)
    out = _lanczos3_float_t(img, size)
    np.round(out, out=out)
    np.clip(out, 0, 255, out=out)
    # Transpose back as uint8 (4x fewer bytes than the float32 array); C order for later gathers.
    return np.ascontiguousarray(out.astype(np.uint8).transpose(1, 0, 2))


@lru_cache(maxsize=8)
def _crop_coords(in_size: int, out_size: int, crop_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    side = np.float32(np.clip(np.sqrt(np.float32(crop_scale)), 0, 1))
    off = (np.float32(1.0) - side) / np.float32(2.0)
    y1, y2 = off, off + side
    scale = (y2 - y1) * np.float32(in_size - 1) / np.float32(out_size - 1)
    pos = y1 * np.float32(in_size - 1) + np.arange(out_size, dtype=np.float32) * scale
    lo = np.floor(pos).astype(np.int64)
    hi = np.ceil(pos).astype(np.int64)
    frac = (pos - lo.astype(np.float32)).astype(np.float32)
    return lo, hi, frac


@lru_cache(maxsize=1)
def _unit_lut() -> np.ndarray:
    """uint8 -> float32 ``x * (1/255)`` as ``convert_image_dtype`` computes it, for all 256 values."""
    return np.arange(256, dtype=np.uint8).astype(np.float32) * np.float32(1.0 / 255.0)


def tf_center_crop_resize_numpy(img: np.ndarray, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """The reference center crop: keep area ``crop_scale`` (side x sqrt), bilinear back to full size.

    Follows ``tf.image.convert_image_dtype`` (uint8 -> float x 1/255), ``crop_and_resize``
    (bilinear, float32) and the conversion back (x 255.5, truncate, saturate).
    """
    h, w = img.shape[:2]
    if h != w:
        raise ValueError(f"center crop expects a square image, got {img.shape}")
    lo, hi, frac = _crop_coords(h, h, float(crop_scale))
    unit = _unit_lut()
    # TF: top = tl + (tr - tl) * x_lerp (same for bottom), out = top + (bottom - top) * y_lerp.
    # Interpolating along x once for every source row gives exactly those float ops per element.
    # The column gathers read uint8 and convert through a 256-entry table holding exactly
    # float32(x) * float32(1/255); in-place ops (a + b == b + a in IEEE) avoid temporaries.
    left = unit[img[:, lo]]
    horiz = unit[img[:, hi]]
    horiz -= left
    horiz *= frac[None, :, None]
    horiz += left
    top = horiz[lo]
    out = horiz[hi]
    out -= top
    out *= frac[:, None, None]
    out += top
    # convert_image_dtype(float -> uint8, saturate): x * 255.5, truncated; x is in [0, 1] here.
    np.clip(out, 0.0, 1.0, out=out)
    out *= np.float32(255.5)
    return out.astype(np.uint8)


@lru_cache(maxsize=16)
def _trimmed_spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`lanczos3_spans` plus the number of leading taps with nonzero weight per output pixel.

    The padding taps (weight 0, always at the end) only ever add +0.0, which changes no sum's
    value, so the kernels skip them.
    """
    index, weight = lanczos3_spans(in_size, out_size)
    count = (weight != 0).sum(axis=1).astype(np.int64)
    for row, n in zip(weight, count, strict=True):
        if (row[n:] != 0).any():  # interior zero weight: keep every tap (never seen for lanczos3)
            count[:] = weight.shape[1]
            break
    return index, weight, count


@lru_cache(maxsize=1)
def numba_kernels():
    """The numba kernels (compiled lazily; ``None`` if numba is unavailable).

    Every arithmetic step is a float32 op on float32 operands, written in the order of the numpy
    reference, and numba's default (no fastmath) lets LLVM neither contract ``a * b + c`` into an
    FMA nor reassociate sums; it only vectorizes across independent pixels.
    """
    try:
        import numba
    except ImportError:  # pragma: no cover - numba comes with robosuite
        return None

    def jit(fn):
        try:
            return numba.njit(nogil=True, cache=True, boundscheck=False)(fn)
        except Exception:  # no writable cache location: compile per process instead
            return numba.njit(nogil=True, cache=False, boundscheck=False)(fn)

    @jit
    def lanczos_t(src, ridx, rw, rn, cidx, cw, cn):
        """Lanczos rows then columns, rounded + clipped to uint8, returned *transposed* (W, H, C)."""
        h, w, c = src.shape
        oh, ow = ridx.shape[0], cidx.shape[0]
        wc, hc = w * c, oh * c
        flat = src.reshape(h, wc)
        acc = np.empty(wc, np.float32)
        rows_t = np.empty((w, hc), np.float32)  # rows pass result, transposed: contiguous column gathers
        for y in range(oh):
            i0, w0 = ridx[y, 0], rw[y, 0]
            for j in range(wc):
                acc[j] = np.float32(flat[i0, j]) * w0
            for k in range(1, rn[y]):
                ik, wk = ridx[y, k], rw[y, k]
                for j in range(wc):
                    acc[j] = acc[j] + np.float32(flat[ik, j]) * wk
            for x in range(w):
                for ch in range(c):
                    rows_t[x, y * c + ch] = acc[x * c + ch]
        out_t = np.empty((ow, oh, c), np.uint8)
        flat_out = out_t.reshape(ow, hc)
        col = np.empty(hc, np.float32)
        lo, hi = np.float32(0.0), np.float32(255.0)
        for x in range(ow):
            i0, w0 = cidx[x, 0], cw[x, 0]
            for j in range(hc):
                col[j] = rows_t[i0, j] * w0
            for k in range(1, cn[x]):
                ik, wk = cidx[x, k], cw[x, k]
                for j in range(hc):
                    col[j] = col[j] + rows_t[ik, j] * wk
            for j in range(hc):
                v = np.rint(col[j])  # np.round: half to even
                v = min(max(v, lo), hi)
                flat_out[x, j] = np.uint8(v)
        return out_t

    @jit
    def crop_t(img_t, lo, hi, frac, unit, k):
        """Center crop of an image given transposed (W, H, C): x lerp first, then y, as TF."""
        w, h, c = img_t.shape
        n = lo.shape[0]
        zero, one = np.float32(0.0), np.float32(1.0)
        horiz = np.empty((n, h, c), np.float32)  # (x_out, y_src, c)
        for xo in range(n):
            left, right, f = lo[xo], hi[xo], frac[xo]
            for y in range(h):
                for ch in range(c):
                    a = np.float32(img_t[left, y, ch]) * unit
                    b = np.float32(img_t[right, y, ch]) * unit
                    horiz[xo, y, ch] = (b - a) * f + a
        out = np.empty((n, n, c), np.uint8)
        for yo in range(n):
            t, b, f = lo[yo], hi[yo], frac[yo]
            for xo in range(n):
                for ch in range(c):
                    top = horiz[xo, t, ch]
                    v = (horiz[xo, b, ch] - top) * f + top
                    v = min(max(v, zero), one) * k
                    out[yo, xo, ch] = np.uint8(np.int32(v))  # truncation, as astype(uint8)
        return out

    @jit
    def normalise(img, lut, out):
        """out[t * 3 + c, y, x] = lut[t * 3 + c, img[y, x, c]] for every tower t."""
        h, w, c = img.shape
        for ch in range(lut.shape[0]):
            cc = ch % c
            for y in range(h):
                for x in range(w):
                    out[ch, y, x] = lut[ch, img[y, x, cc]]

    return lanczos_t, crop_t, normalise


def lanczos3_resize_transposed(img: np.ndarray, size: int) -> np.ndarray | None:
    """Numba lanczos resize, result transposed (W, H, C); None without numba."""
    kernels = numba_kernels()
    if kernels is None:
        return None
    h, w = img.shape[:2]
    return kernels[0](np.ascontiguousarray(img), *_trimmed_spans(h, size), *_trimmed_spans(w, size))


def center_crop_from_transposed(img_t: np.ndarray, crop_scale: float) -> np.ndarray:
    """Center crop ``crop_scale`` of the area of a transposed float image (the numba kernel)."""
    lo, hi, frac = _crop_coords(img_t.shape[0], img_t.shape[0], float(crop_scale))
    return numba_kernels()[1](img_t, lo, hi, frac, np.float32(1.0 / 255.0), np.float32(255.5))


def tf_lanczos3_resize(img: np.ndarray, size: int) -> np.ndarray:
    """``tf.image.resize(img, (size, size), "lanczos3", antialias=True)`` then round + clip to uint8.

    Bit-identical to :func:`tf_lanczos3_resize_numpy`, about 10x faster (numba).
    """
    h, w = img.shape[:2]
    if (h, w) == (size, size) or numba_kernels() is None:
        return tf_lanczos3_resize_numpy(img, size)
    return np.ascontiguousarray(lanczos3_resize_transposed(img, size).transpose(1, 0, 2))


def tf_center_crop_resize(img: np.ndarray, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """The reference center crop (see :func:`tf_center_crop_resize_numpy`), bit-identical, numba."""
    if img.shape[0] != img.shape[1] or numba_kernels() is None:
        return tf_center_crop_resize_numpy(img, crop_scale)
    return center_crop_from_transposed(img.transpose(1, 0, 2), crop_scale)
