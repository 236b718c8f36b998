"""vla_gym's msgpack-numpy codec is byte-compatible with openpi_client's, and rejects before allocating."""

from __future__ import annotations

import tracemalloc

import msgpack
import numpy as np
import pytest

from vla_gym import wire

msgpack_numpy = pytest.importorskip("openpi_client.msgpack_numpy")


def test_encoding_is_byte_identical_to_openpi_and_decodes_the_same():
    obj = {"observation/image": np.arange(224 * 224 * 3, dtype=np.uint8).reshape(224, 224, 3),
           "observation/state": np.linspace(0, 1, 8), "prompt": "pick", "n": np.float32(1.5), "i": np.int64(-3),
           "nested": {"a": [np.zeros((2, 0), np.float16), True, None, 1.25]}}
    frame = msgpack_numpy.packb(obj)
    assert wire.packb(obj) == frame
    ours, theirs = wire.unpackb(frame), msgpack_numpy.unpackb(frame)
    for key in ("observation/image", "observation/state"):
        np.testing.assert_array_equal(ours[key], theirs[key])
        assert ours[key].dtype == theirs[key].dtype and not ours[key].flags.writeable  # zero-copy view
    assert ours["n"] == theirs["n"] and type(ours["n"]) is np.float32 and ours["i"] == -3
    assert ours["prompt"] == "pick" and ours["nested"]["a"][1:] == [True, None, 1.25]
    with pytest.raises(ValueError):
        wire.packb({"x": np.zeros(2, dtype=object)})


@pytest.mark.parametrize("frame", [
    msgpack.packb({b"__npgeneric__": True, b"data": 2**30, b"dtype": "|S"}),           # openpi: 1 GiB allocation
    msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}),  # openpi: SIGSEGV
    msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [2**40, 2**40]}),
    msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 12, b"dtype": "<f4", b"shape": [4]}),
    msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 16, b"dtype": "<c8", b"shape": [2]}),
    msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|V8", b"shape": [1]}),
    msgpack.packb({b"__npgeneric__": True, b"data": 300, b"dtype": "|u1"}),
    b"\x91" * 100_000,
])
def test_hostile_frames_are_rejected_without_allocating(frame):
    assert len(frame) < 200_000
    tracemalloc.start()
    with pytest.raises(wire.WireError):
        wire.unpackb(frame)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2**20, f"decoding allocated {peak} bytes"
