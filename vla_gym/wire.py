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
"""Request keys any mapping tolerates: ``request_id`` is echoed in the reply (stale-reply detection).
No other extra key is ignored: openpi's LIBERO client (``examples/libero/main.py``) sends exactly
the four ``openpi_libero`` keys and openpi-client's ``WebsocketClientPolicy.infer`` adds none."""
KNOWN_CAMERAS = ("agentview", "wrist")
"""Camera names a request may carry (the env contract's cameras)."""
STATE_BOUND = 10.0
"""Largest ``|x|`` of any ``state`` / ``joint_pos`` / privileged pose entry, checked AFTER the cast to
float32: metres within 10 m of the world origin (``envs.base.WORLD_BOUND_M``), axis-angles and joint
angles within 2 pi. A finite float64 such as 1e300 becomes inf in float32, and 3e38 is finite in
float32 but overflows the policies' normalisation; both are refused here, before a batch is formed."""
INSTRUCTION_MAX_LENGTH = 512
RETRYABLE_ERROR = "Retryable error"
"""Prefix of the text frame a client gets when a request batched with its own made the policy fail:
its request was not answered and may be sent again on the same (still open) connection."""
POLICY_ERROR = "Policy error"
"""Prefix of the text frame a client gets when the policy raised on its own request (then close 1011)."""


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


def _check_str(value: Any, key: str, max_len: int = INSTRUCTION_MAX_LENGTH) -> str:
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


def _bounded(value: Any, key: str, shape: tuple[int, ...], bound: float | np.ndarray = STATE_BOUND) -> np.ndarray:
    """A float array cast to the float32 the policy receives, then checked finite and within ``bound``."""
    arr = _check_array(value, key, kinds="f", shape=shape)
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32)  # the cast first: a finite float64 may overflow here
    if not np.all(np.isfinite(out)):
        raise WireError(f"{key!r} has values that are not finite as float32")
    if np.any(np.abs(out) > bound):
        raise WireError(f"{key!r} has values outside [-bound, bound] (bound {np.max(bound):g}) after the cast "
                        "to float32")
    return out


def _image(value: Any, key: str, size: int) -> np.ndarray:
    img = _check_array(value, key, kinds="u", shape=(size, size, 3))
    if img.dtype != np.uint8:
        raise WireError(f"{key!r} must be uint8, got {img.dtype}")
    return img


def _state(value: Any, key: str) -> np.ndarray:
    return _bounded(value, key, (8,))


_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_POSE_BOUND = np.array([STATE_BOUND] * 3 + [1.0 + 1e-6] * 4, dtype=np.float32)  # quaternion: unit, plus fp32 rounding
PRIVILEGED_SCHEMA = (
    "privileged = {'goal': str (<= 512 printable ASCII; predicates 'lift X' | 'on X Y' | 'in X Y' separated "
    "by ';', every X, Y a key of boxes), 'poses': {name: float (7,) [xyz within 10 m, unit quaternion]}, "
    "'boxes': {name: float (6,) world AABB [lo xyz, hi xyz], lo <= hi, within 10 m}}; poses and boxes have "
    "the same names (1-64 chars of [A-Za-z0-9_.-])"
)
"""The privileged map an env built with ``privileged=True`` produces (``envs.base``) and the scripted
expert reads (``policies.scripted``); requests are checked against it entry by entry."""


def _privileged(value: Any) -> dict[str, Any]:
    """The ``privileged`` map validated against :data:`PRIVILEGED_SCHEMA` (cast to float32)."""
    from vla_gym.envs.contract import INSTRUCTION_CHARSET

    if not isinstance(value, dict) or set(value) != {"goal", "poses", "boxes"}:
        got = sorted(map(str, value))[:8] if isinstance(value, dict) else type(value).__name__
        raise WireError(f"'privileged' must be a map with exactly goal, poses, boxes (got {got}); {PRIVILEGED_SCHEMA}")
    goal = _check_str(value["goal"], "privileged/goal")
    if set(goal) - set(INSTRUCTION_CHARSET):
        raise WireError("'privileged/goal' must be printable ASCII")
    out: dict[str, Any] = {"goal": goal}
    for part, shape, bound in (("poses", (7,), _POSE_BOUND), ("boxes", (6,), STATE_BOUND)):
        entries = value[part]
        if not isinstance(entries, dict):
            raise WireError(f"'privileged/{part}' must be a map name -> float array; {PRIVILEGED_SCHEMA}")
        for name in entries:
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise WireError(f"'privileged/{part}' names must be 1-64 chars of [A-Za-z0-9_.-]")
        out[part] = {n: _bounded(v, f"privileged/{part}/{n}", shape, bound) for n, v in entries.items()}
    if set(out["poses"]) != set(out["boxes"]):
        raise WireError("'privileged/poses' and 'privileged/boxes' must name the same objects")
    for name, box in out["boxes"].items():
        if np.any(box[:3] > box[3:]):
            raise WireError(f"'privileged/boxes/{name}' must be [lo xyz, hi xyz] with lo <= hi")
    for pred in (p.split() for p in goal.split(";") if p.strip()):
        if not ((pred[0] == "lift" and len(pred) == 2) or (pred[0] in ("on", "in") and len(pred) == 3)):
            raise WireError(f"'privileged/goal' predicate {' '.join(pred)[:64]!r} is not 'lift X', 'on X Y' or 'in X Y'")
        missing = [n for n in pred[1:] if n not in out["boxes"]]
        if missing:
            raise WireError(f"'privileged/goal' names {missing[:4]} that have no entry in 'privileged/boxes'")
    return out


VLA_GYM_KEYS = ("instruction", "images", "state", "joint_pos", "privileged")
"""Every key of the ``vla_gym`` format; each one present is validated, whether the policy reads it or not."""


def _from_vla_gym(msg: Any, inputs: PolicyInputs, image_size: int) -> Observation:
    """vla_gym's own observation: ``images`` {camera: uint8 (S, S, 3) upright}, ``instruction``, ``state``,
    ``joint_pos``, ``privileged``. Required: what the policy reads; every key present is validated."""
    required = {"instruction"} | ({"images"} if inputs.cameras else set()) | ({"state"} if inputs.uses_state else set())
    if inputs.uses_privileged:
        required.add("privileged")
    msg = _check_keys(msg, required, set(VLA_GYM_KEYS))
    obs: Observation = {"instruction": _check_str(msg["instruction"], "instruction")}
    if "images" in msg:
        images = msg["images"]
        if (not isinstance(images, dict) or not set(inputs.cameras) <= set(images)
                or not set(images) <= set(KNOWN_CAMERAS)):
            got = sorted(map(str, images))[:8] if isinstance(images, dict) else type(images).__name__
            raise WireError(f"'images' must be a map holding the cameras {list(inputs.cameras)} (and optionally "
                            f"others of {list(KNOWN_CAMERAS)}), got {got}")
        checked = {c: _image(img, f"images/{c}", inputs.image_size) for c, img in images.items()}
        if inputs.cameras:  # writable copies, as the env's own arrays (decoded ones are read-only views)
            obs["images"] = {c: checked[c].copy() for c in inputs.cameras}
    if "state" in msg:
        obs["state"] = _state(msg["state"], "state")
    if "joint_pos" in msg:
        obs["joint_pos"] = _bounded(msg["joint_pos"], "joint_pos", (7,))
    if "privileged" in msg:
        privileged = _privileged(msg["privileged"])
        if inputs.uses_privileged:
            obs["privileged"] = privileged
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


OPENPI_LIBERO_KEYS = ("observation/image", "observation/wrist_image", "observation/state", "prompt")
"""Exactly what openpi's LIBERO client sends; all four are required and validated for every policy."""


def _from_openpi_libero(msg: Any, inputs: PolicyInputs, image_size: int) -> Observation:
    """openpi's LIBERO client: ``observation/image``, ``observation/wrist_image`` (uint8 224², turned 180°),
    ``observation/state`` (8,), ``prompt``. Images are turned back upright and resized to the policy's size."""
    msg = _check_keys(msg, set(OPENPI_LIBERO_KEYS), set())
    obs: Observation = {"instruction": _check_str(msg["prompt"], "prompt")}
    sent = {cam: _image(msg[key], key, image_size) for cam, key in OPENPI_LIBERO_CAMERAS.items()}
    state = _state(msg["observation/state"], "observation/state")
    if inputs.cameras:
        obs["images"] = {cam: resize_square(openpi_to_upright(sent[cam]), inputs.image_size) for cam in inputs.cameras}
    if inputs.uses_state:
        obs["state"] = state
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
        """Every request key of this format -> dtype/shape and whether it is required (announced in the metadata)."""
        state = {"dtype": "<f4|<f8", "shape": [8], "max_abs_after_float32_cast": STATE_BOUND}
        if self.name == "vla_gym":
            out: dict[str, Any] = {"instruction": {"type": "str", "max_len": INSTRUCTION_MAX_LENGTH, "required": True}}
            for c in KNOWN_CAMERAS:
                out[f"images/{c}"] = {"dtype": "|u1", "shape": [inputs.image_size, inputs.image_size, 3],
                                      "required": c in inputs.cameras}
            out["state"] = {**state, "required": inputs.uses_state}
            out["joint_pos"] = {**state, "shape": [7], "required": False}
            out["privileged"] = {"type": "map", "schema": PRIVILEGED_SCHEMA, "required": inputs.uses_privileged}
            return out
        out = {"prompt": {"type": "str", "max_len": INSTRUCTION_MAX_LENGTH, "required": True}}
        for key in OPENPI_LIBERO_CAMERAS.values():
            out[key] = {"dtype": "|u1", "shape": [image_size, image_size, 3], "required": True}
        out["observation/state"] = {**state, "required": True}
        return out


INPUT_FORMATS: dict[str, InputFormat] = {
    "vla_gym": InputFormat(
        "vla_gym",
        "vla_gym observation: images {camera: uint8 (S,S,3) upright, S = policy image_size}, instruction (str), "
        "state float (8,) [eef pos, axis-angle, 2 finger joints], joint_pos float (7,), privileged (see "
        "PRIVILEGED_SCHEMA); what the policy reads is required, every key present is validated (floats cast to "
        "float32, then finite and |x| <= 10), no other key is accepted.",
        _from_vla_gym,
    ),
    "openpi_libero": InputFormat(
        "openpi_libero",
        "openpi LIBERO client (examples/libero/main.py): exactly these four keys, all required and validated for "
        "every policy: observation/image -> agentview, observation/wrist_image "
        "-> wrist (uint8 (224,224,3), raw frame turned 180 deg and resize_with_pad to 224), observation/state "
        "float (8,) -> state (float32, |x| <= 10), prompt -> instruction. Images are mirrored left-right (undoing the 180 deg "
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
