"""openpi's own client (PyPI openpi-client, code no one here wrote) against a vla_gym server
serving a tiny OpenVLA-OFT checkpoint: metadata, infer in both input formats, errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("openpi_client")

from openpi_client import image_tools  # noqa: E402
from openpi_client.websocket_client_policy import WebsocketClientPolicy  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from tests.server.helpers import RecordingPolicy  # noqa: E402
from vla_gym import wire  # noqa: E402
from vla_gym.policies.testing import observation  # noqa: E402
from vla_gym.serve import serve_in_thread  # noqa: E402


@pytest.fixture(scope="module")
def oft(tiny_oft):
    """The tiny OFT policy (tests/server/conftest.py), recording its calls."""
    return RecordingPolicy(tiny_oft)


def openpi_libero_request(obs: dict) -> dict:
    """What openpi's examples/libero/main.py sends for a vla_gym observation (raw = upright[::-1])."""
    raw = {c: img[::-1] for c, img in obs["images"].items()}
    turn = {c: np.ascontiguousarray(img[::-1, ::-1]) for c, img in raw.items()}  # the client's 180 deg turn
    return {
        "observation/image": image_tools.convert_to_uint8(image_tools.resize_with_pad(turn["agentview"], 224, 224)),
        "observation/wrist_image": image_tools.convert_to_uint8(image_tools.resize_with_pad(turn["wrist"], 224, 224)),
        "observation/state": obs["state"].astype(np.float64),
        "prompt": obs["instruction"],
    }


def test_openpi_libero_client_metadata_infer_errors(oft):
    obs = observation(256, wrist=True)
    with serve_in_thread(oft, input_format="openpi_libero") as server:
        client = WebsocketClientPolicy("127.0.0.1", server.port)
        meta = client.get_server_metadata()
        assert meta["server"] == "vla_gym" and meta["input_format"] == "openpi_libero"
        assert meta["policy"]["name"] == "openvla_oft"
        assert meta["inputs"] == {"cameras": ["agentview", "wrist"], "image_size": 256, "uses_state": True,
                                  "uses_privileged": False}
        assert meta["execution"] == {"mode": "open_loop", "replan_steps": 8}
        assert meta["chunk_size"] == 8 and meta["action_dim"] == 7
        assert meta["input_mapping"]["expects"]["observation/image"] == {"dtype": "|u1", "shape": [224, 224, 3],
                                                                          "required": True}

        request = openpi_libero_request(obs)
        reply = client.infer(request)
        assert reply["actions"].shape == (8, 7) and reply["actions"].dtype == np.float32
        assert {"infer_ms", "prev_total_ms"} - set(reply["server_timing"]) == {"prev_total_ms"}  # 1st request
        assert reply["policy_timing"]["infer_ms"] > 0
        # the documented mapping, applied here, gives the very observation the policy was called with
        mapped = wire.INPUT_FORMATS["openpi_libero"].convert(wire.unpackb(wire.packb(request)), oft.inputs, 224)
        np.testing.assert_array_equal(reply["actions"], oft.act([mapped], env_ids=[0]).actions[0])
        assert "prev_total_ms" in client.infer(request)["server_timing"]

        # invalid requests: an error text frame (RuntimeError in openpi's client), the connection stays usable
        for bad in ({**request, "observation/image": request["observation/image"][:100]},
                    {k: v for k, v in request.items() if k != "prompt"},
                    {**request, "observation/state": np.zeros(8, np.complex64).real.astype(np.int32)},
                    {**request, "extra": 1}):
            with pytest.raises(RuntimeError, match="Invalid request"):
                client.infer(bad)
        assert client.infer(request)["actions"].shape == (8, 7)

        # an exception inside the policy: an error id as a text frame (the traceback stays in the server log),
        # then close code 1011 (openpi's code for a policy failure)
        with pytest.raises(RuntimeError, match=r"Policy error \(error id [0-9a-f]{12}\)") as failed:
            client.infer({**request, "prompt": "boom"})
        assert "boom requested" not in str(failed.value) and "Traceback" not in str(failed.value)
        with pytest.raises(ConnectionClosed) as closed:
            client._ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1011
        # the server is still up for new clients
        assert WebsocketClientPolicy("127.0.0.1", server.port).infer(request)["actions"].shape == (8, 7)


def test_openpi_client_vla_gym_format_equals_in_process_act(oft):
    obs = observation(256, wrist=True)
    with serve_in_thread(oft, input_format="vla_gym") as server:
        client = WebsocketClientPolicy("127.0.0.1", server.port)
        assert client.get_server_metadata()["input_mapping"]["expects"]["images/wrist"]["shape"] == [256, 256, 3]
        reply = client.infer({"images": obs["images"], "instruction": obs["instruction"], "state": obs["state"]})
    np.testing.assert_array_equal(reply["actions"], oft.act([obs]).actions[0])


def test_openpi_mapping_undoes_the_180_degree_turn():
    upright = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    raw = upright[::-1]  # the simulator's bottom-up frame (vla_gym flips it vertically)
    openpi_image = raw[::-1, ::-1]  # openpi's LIBERO client turns it by 180 degrees
    np.testing.assert_array_equal(wire.openpi_to_upright(openpi_image), upright)
    np.testing.assert_array_equal(wire.upright_to_openpi(upright, 224), openpi_image)
    big = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    np.testing.assert_array_equal(wire.resize_with_pad(big, 224), image_tools.resize_with_pad(big, 224, 224))
