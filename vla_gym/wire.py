"""openpi's wire format, decoded defensively, and the named observation mappings of the server.

Encoding (byte-compatible with ``openpi_client.msgpack_numpy``): msgpack with
``use_bin_type=True``; an ``np.ndarray`` travels as the map
``{b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": shape}``
and a numpy scalar as ``{b"__npgeneric__": True, b"data": obj.item(), b"dtype": dtype.str}``
(the marker keys are msgpack *bin*, user keys are *str*). Object, void and complex dtypes are
refused, so nothing ever falls back to pickle.

Decoding (:func:`unpackb`) differs from openpi's on purpose: openpi builds
``np.dtype(obj[b"dtype"]).type(obj[b"data"])`` and ``np.ndarray(buffer=..., shape=...)`` from
whatever the peer sent, so a 39-byte message can allocate a GiB (``|S`` scalar with a huge
``data``) and an object dtype can crash the process. Here every array/scalar marker is checked
*before* anything is built: the dtype must be one of :data:`ALLOWED_DTYPES`, the shape a short
list of non-negative ints whose product is at most ``max_array_elements`` and, times the item
size, exactly the length of ``data``; arrays are zero-copy, read-only views of the message.
msgpack's own length limits bound strings, bins, lists and maps by the frame size; nesting
depth is checked after decoding (msgpack's C decoder bounds its own stack).

Observation mappings (:data:`INPUT_FORMATS`) turn a decoded request into a vla_gym
observation, validated against the served policy's :class:`~vla_gym.policy.PolicyInputs`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

import msgpack
import numpy as np

from vla_gym.policy import Observation, PolicyInputs

ALLOWED_DTYPES = frozenset({"|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8"})
"""Array/scalar dtypes accepted from the wire (little-endian bool, ints, floats; no object/void/complex/str)."""
_SCALAR_KINDS = {"b": (bool,), "u": (int,), "i": (int,), "f": (float, int)}
MAX_NDIM = 8
RESERVED_KEYS = ("request_id",)
"""Request keys any mapping tolerates: ``request_id`` is echoed in the reply (stale-reply detection)."""


class WireError(ValueError):
    """A message that is not a well-formed, allowed request (the client's fault)."""


@dataclass(frozen=True)
class Limits:
    """What one message may contain.

    Attributes:
        max_message_bytes: Largest websocket frame (websockets ``max_size``; larger frames close
            the connection with 1009).
        max_array_elements: Most elements in one array.
        max_total_elements: Most elements over all arrays of one message.
        max_depth: Deepest nesting of maps/lists (an image dict inside the request is depth 2).
        max_str_len: Longest string (an instruction is at most 512 characters in vla_gym).
        max_container_len: Most entries of one map or list.
    """

    max_message_bytes: int = 4 * 2**20
    max_array_elements: int = 2**22
    max_total_elements: int = 2**23
    max_depth: int = 8
    max_str_len: int = 4096
    max_container_len: int = 1024


def pack_array(obj: Any) -> Any:
    """msgpack ``default`` hook: numpy arrays and scalars exactly as openpi encodes them."""
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"Unsupported dtype: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def packb(obj: Any) -> bytes:
    """Encode ``obj`` as openpi does (``msgpack.packb(obj, default=pack_array)``)."""
    return msgpack.packb(obj, default=pack_array, use_bin_type=True)


_ARRAY_KEYS = {b"__ndarray__", b"data", b"dtype", b"shape"}
_SCALAR_KEYS = {b"__npgeneric__", b"data", b"dtype"}
_DTYPE_RE = re.compile(r"^[<|][biuf][1248]$")


def _checked_dtype(value: Any) -> np.dtype:
    if not isinstance(value, str) or len(value) > 4 or not _DTYPE_RE.match(value) or value not in ALLOWED_DTYPES:
        raise WireError(f"dtype {str(value)[:16]!r} is not allowed; allowed: {sorted(ALLOWED_DTYPES)}")
    return np.dtype(value)


def _object_hook(obj: dict, limits: Limits) -> Any:
    bytes_keys = [k for k in obj if isinstance(k, bytes)]
    if not bytes_keys:
        return obj
    keys = set(obj)
    if b"__ndarray__" in keys:
        if keys != _ARRAY_KEYS:
            raise WireError(f"array marker with keys {sorted(map(repr, keys))[:6]}; expected {sorted(map(repr, _ARRAY_KEYS))}")
        data, shape = obj[b"data"], obj[b"shape"]
        dtype = _checked_dtype(obj[b"dtype"])
        if not isinstance(data, bytes):
            raise WireError(f"array data must be bin, got {type(data).__name__}")
        if not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM:
            raise WireError(f"array shape must be a list of at most {MAX_NDIM} ints")
        n = 1
        for d in shape:
            if type(d) is not int or d < 0:
                raise WireError(f"array shape entries must be non-negative ints, got {str(d)[:32]!r}")
            n *= d
            if n > limits.max_array_elements:
                raise WireError(f"array of shape {list(shape)[:MAX_NDIM]} exceeds {limits.max_array_elements} elements")
        if n * dtype.itemsize != len(data):
            raise WireError(f"array of shape {list(shape)} and dtype {dtype.str} needs {n * dtype.itemsize} bytes, "
                            f"data has {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)  # zero-copy, read-only view
    if b"__npgeneric__" in keys:
        if keys != _SCALAR_KEYS:
            raise WireError("scalar marker must have exactly __npgeneric__, data, dtype")
        dtype = _checked_dtype(obj[b"dtype"])
        data = obj[b"data"]
        if type(data) not in _SCALAR_KINDS[dtype.kind] and not (dtype.kind in "iu" and type(data) is bool):
            raise WireError(f"scalar of dtype {dtype.str} with data of type {type(data).__name__}")
        if dtype.kind in "iu" and not np.iinfo(dtype).min <= int(data) <= np.iinfo(dtype).max:
            raise WireError(f"scalar {str(data)[:32]} does not fit {dtype.str}")
        try:
            return dtype.type(data)
        except (OverflowError, ValueError) as e:
            raise WireError(f"scalar {str(data)[:32]} does not fit {dtype.str}: {e}") from None
    raise WireError(f"unexpected bin map keys {[k[:16] for k in bytes_keys][:4]} (only array/scalar markers use bin keys)")


def _check_tree(obj: Any, limits: Limits) -> None:
    """Depth and total-element check of a decoded message (iterative: no recursion limit)."""
    total = 0
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            if depth > limits.max_depth:
                raise WireError(f"message nested deeper than {limits.max_depth}")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children)
        elif isinstance(node, np.ndarray):
            total += node.size
            if total > limits.max_total_elements:
                raise WireError(f"message holds more than {limits.max_total_elements} array elements")


def unpackb(data: bytes, limits: Limits = Limits()) -> Any:
    """Decode one frame defensively; raise :class:`WireError` for anything malformed or not allowed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("expected a binary frame (msgpack), got a text frame")
    if len(data) > limits.max_message_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds {limits.max_message_bytes}")
    try:
        obj = msgpack.unpackb(
            data, object_hook=functools.partial(_object_hook, limits=limits), raw=False, use_list=True,
            strict_map_key=True, max_str_len=limits.max_str_len,
            max_bin_len=limits.max_message_bytes, max_array_len=limits.max_container_len,
            max_map_len=limits.max_container_len, max_ext_len=0,
        )
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            RecursionError, MemoryError, UnicodeDecodeError, OverflowError) as e:
        raise WireError(f"malformed msgpack: {type(e).__name__}: {str(e)[:200]}") from None
    _check_tree(obj, limits)
    return obj


# ---------------------------------------------------------------------------- observation mappings
def _check_array(value: Any, key: str, *, kinds: str, shape: tuple[int | None, ...]) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise WireError(f"{key!r} must be an array, got {type(value).__name__}")
    if value.dtype.kind not in kinds:
        raise WireError(f"{key!r} has dtype {value.dtype}; expected kind {kinds!r}")
    if value.ndim != len(shape) or any(s is not None and d != s for d, s in zip(value.shape, shape)):
        want = tuple("*" if s is None else s for s in shape)
        raise WireError(f"{key!r} has shape {value.shape}; expected {want}")
    return value


def _check_str(value: Any, key: str, max_len: int = 512) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise WireError(f"{key!r} must be a string of at most {max_len} characters")
    return value


def _check_keys(msg: Any, required: set[str], optional: set[str]) -> dict:
    if not isinstance(msg, dict):
        raise WireError(f"a request must be a map, got {type(msg).__name__}")
    keys = set(msg)
    missing = required - keys
    unknown = keys - required - optional - set(RESERVED_KEYS)
    if missing or unknown:
        raise WireError(f"request keys: missing {sorted(missing)}, unknown {sorted(map(str, unknown))[:8]}; "
                        f"expected {sorted(required)} (optional {sorted(optional)})")
    return msg


def _state(value: Any, key: str) -> np.ndarray:
    arr = _check_array(value, key, kinds="f", shape=(8,))
    if not np.all(np.isfinite(arr)):
        raise WireError(f"{key!r} has non-finite values")
    return arr.astype(np.float32)


def _from_vla_gym(msg: Any, inputs: PolicyInputs, image_size: int) -> Observation:
    """vla_gym's own observation: ``images`` {camera: uint8 (S, S, 3) upright}, ``instruction``, ``state``."""
    required = {"instruction"} | ({"images"} if inputs.cameras else set()) | ({"state"} if inputs.uses_state else set())
    if inputs.uses_privileged:
        required.add("privileged")
    msg = _check_keys(msg, required, {"images", "state", "joint_pos"})
    obs: Observation = {"instruction": _check_str(msg["instruction"], "instruction")}
    if inputs.cameras:
        images = msg["images"]
        if not isinstance(images, dict) or set(images) != set(inputs.cameras):
            got = sorted(images) if isinstance(images, dict) else type(images).__name__
            raise WireError(f"'images' must hold exactly the cameras {list(inputs.cameras)}, got {got}")
        s = inputs.image_size
        obs["images"] = {c: _check_array(images[c], f"images/{c}", kinds="u", shape=(s, s, 3)) for c in inputs.cameras}
        for c, img in obs["images"].items():
            if img.dtype != np.uint8:
                raise WireError(f"'images/{c}' must be uint8, got {img.dtype}")
            obs["images"][c] = img.copy()  # writable, as the env's own arrays (decoded ones are read-only views)
    if "state" in msg:
        obs["state"] = _state(msg["state"], "state")
    if "joint_pos" in msg:
        obs["joint_pos"] = _check_array(msg["joint_pos"], "joint_pos", kinds="f", shape=(7,)).astype(np.float32)
    if inputs.uses_privileged:
        if not isinstance(msg["privileged"], dict):
            raise WireError("'privileged' must be a map")
        obs["privileged"] = msg["privileged"]
    return obs


OPENPI_LIBERO_CAMERAS = {"agentview": "observation/image", "wrist": "observation/wrist_image"}


def openpi_to_upright(image: np.ndarray) -> np.ndarray:
    """openpi's LIBERO image (raw frame turned 180°) -> vla_gym's upright image.

    The raw OpenGL frame is bottom-up; vla_gym flips it vertically (``raw[::-1]``) while
    openpi's client turns it by 180° (``raw[::-1, ::-1]``), so the two differ by a left-right
    mirror and the undo is ``image[:, ::-1]``.
    """
    return np.ascontiguousarray(image[:, ::-1])


def upright_to_openpi(image: np.ndarray, size: int = 224) -> np.ndarray:
    """vla_gym's upright image -> what openpi's LIBERO client sends (180° turn, resize-with-pad)."""
    return resize_with_pad(np.ascontiguousarray(image[:, ::-1]), size)


def resize_with_pad(image: np.ndarray, size: int) -> np.ndarray:
    """openpi_client's ``image_tools.resize_with_pad`` (PIL bilinear, zero padding) for one square target."""
    from PIL import Image

    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    ratio = max(w / size, h / size)
    rh, rw = int(h / ratio), int(w / ratio)
    resized = Image.fromarray(image).resize((rw, rh), resample=Image.BILINEAR)
    canvas = Image.new(resized.mode, (size, size), 0)
    canvas.paste(resized, (max(0, int((size - rw) / 2)), max(0, int((size - rh) / 2))))
    return np.asarray(canvas)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image to ``size`` (PIL bicubic); identity when it already has that size."""
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), resample=Image.BICUBIC))


def _from_openpi_libero(msg: Any, inputs: PolicyInputs, image_size: int) -> Observation:
    """openpi's LIBERO client: ``observation/image``, ``observation/wrist_image`` (uint8 224², turned 180°),
    ``observation/state`` (8,), ``prompt``. Images are turned back upright and resized to the policy's size."""
    required = {"prompt"} | {OPENPI_LIBERO_CAMERAS[c] for c in inputs.cameras}
    if inputs.uses_state:
        required.add("observation/state")
    msg = _check_keys(msg, required, set(OPENPI_LIBERO_CAMERAS.values()) | {"observation/state"})
    obs: Observation = {"instruction": _check_str(msg["prompt"], "prompt")}
    images = {}
    for cam in inputs.cameras:
        key = OPENPI_LIBERO_CAMERAS[cam]
        img = _check_array(msg[key], key, kinds="u", shape=(image_size, image_size, 3))
        if img.dtype != np.uint8:
            raise WireError(f"{key!r} must be uint8, got {img.dtype}")
        images[cam] = resize_square(openpi_to_upright(img), inputs.image_size)
    if images:
        obs["images"] = images
    if "observation/state" in msg:
        obs["state"] = _state(msg["observation/state"], "observation/state")
    return obs


@dataclass(frozen=True)
class InputFormat:
    """A named, documented request -> observation mapping, chosen at server start-up."""

    name: str
    description: str
    convert: Callable[[Any, PolicyInputs, int], Observation]
    cameras: Mapping[str, str] | None = None
    """Camera name -> request key, for formats with fixed keys (None: any camera, under ``images``)."""

    def check_policy(self, inputs: PolicyInputs) -> None:
        """Raise ``ValueError`` if this format cannot feed a policy with these inputs."""
        if self.cameras is not None:
            missing = [c for c in inputs.cameras if c not in self.cameras]
            if missing:
                raise ValueError(f"input_format={self.name} carries only cameras {list(self.cameras)}; "
                                 f"the policy reads {list(inputs.cameras)}")
        if inputs.uses_privileged and self.name != "vla_gym":
            raise ValueError(f"input_format={self.name} cannot carry privileged state; use input_format=vla_gym")

    def expected(self, inputs: PolicyInputs, image_size: int) -> dict[str, Any]:
        """Request keys -> dtype/shape, as announced in the server metadata."""
        if self.name == "vla_gym":
            out: dict[str, Any] = {"instruction": {"type": "str"}}
            for c in inputs.cameras:
                out[f"images/{c}"] = {"dtype": "|u1", "shape": [inputs.image_size, inputs.image_size, 3]}
            if inputs.uses_state:
                out["state"] = {"dtype": "<f4|<f8", "shape": [8]}
            if inputs.uses_privileged:
                out["privileged"] = {"type": "map"}
            return out
        out = {"prompt": {"type": "str"}}
        for c in inputs.cameras:
            out[OPENPI_LIBERO_CAMERAS[c]] = {"dtype": "|u1", "shape": [image_size, image_size, 3]}
        if inputs.uses_state:
            out["observation/state"] = {"dtype": "<f4|<f8", "shape": [8]}
        return out


INPUT_FORMATS: dict[str, InputFormat] = {
    "vla_gym": InputFormat(
        "vla_gym",
        "vla_gym observation: images {camera: uint8 (S,S,3) upright, S = policy image_size}, instruction (str), "
        "state float (8,) [eef pos, axis-angle, 2 finger joints]; passed to the policy unchanged "
        "(state cast to float32).",
        _from_vla_gym,
    ),
    "openpi_libero": InputFormat(
        "openpi_libero",
        "openpi LIBERO client (examples/libero/main.py): observation/image -> agentview, observation/wrist_image "
        "-> wrist (uint8 (224,224,3), raw frame turned 180 deg and resize_with_pad to 224), observation/state "
        "float (8,) -> state (float32), prompt -> instruction. Images are mirrored left-right (undoing the 180 deg "
        "turn relative to vla_gym's upright flip) and resized 224 -> policy image_size with PIL bicubic: pixels "
        "are NOT bit-identical to the reference path (the client's 256->224 bilinear resize is lossy).",
        _from_openpi_libero,
        cameras=OPENPI_LIBERO_CAMERAS,
    ),
}


def input_format(name: str) -> InputFormat:
    """The mapping named ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in INPUT_FORMATS:
        raise ValueError(f"unknown input_format {name!r}; valid: {sorted(INPUT_FORMATS)}")
    return INPUT_FORMATS[name]


def inputs_to_dict(inputs: PolicyInputs) -> dict[str, Any]:
    """A policy's declared inputs as plain JSON-able data (for the server's metadata)."""
    d = asdict(inputs)
    d["cameras"] = list(inputs.cameras)
    return d
