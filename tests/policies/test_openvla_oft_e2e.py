"""OpenVLA-OFT end to end against openvla-oft's own eval code (tests/policies/data/oft_e2e/).

The fixture starts from files stored as the release stores them (bf16 VLA weights, a bf16 action
head beside an fp32 proprio projector, DDP ``module.`` keys), feeds 256 x 256 frames (the LIBERO
render size: the JPEG round trip, lanczos3 to 224 and the centre crop all run) and a raw 8-D state,
and compares the final env actions of ``OpenVLAOFTPolicy.from_pretrained`` + ``act`` in fp32 with the
reference's ``get_vla_action`` + ``process_action``. make_fixture.py there says how it was made.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("timm")

DATA = Path(__file__).parent / "data" / "oft_e2e"
CASES = 2


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return dict(np.load(DATA / "reference.npz"))


@pytest.fixture(scope="module", params=["release_files", "fp32_vla_files"])
def policy(request, tmp_path_factory):
    """Two ways to an fp32 run: the released files (bf16 VLA) with ``quantization=fp32``, and the VLA
    shards re-saved in fp32 (exactly the same values) loaded as they are. The heads' files are the
    release's in both: the eval rounds the fp32 projector through bf16 either way."""
    from safetensors.torch import load_file, save_file

    from vla_gym.policies.openvla_oft import OpenVLAOFTPolicy

    if request.param == "release_files":
        return OpenVLAOFTPolicy.from_pretrained(DATA / "checkpoint", device="cpu", quantization="fp32")
    d = tmp_path_factory.mktemp("oft_fp32") / "checkpoint"
    shutil.copytree(DATA / "checkpoint", d)
    for shard in sorted(d.glob("model-*.safetensors")):
        save_file({k: v.float() for k, v in load_file(str(shard)).items()}, str(shard), metadata={"format": "pt"})
    cfg = json.loads((d / "config.json").read_text())
    cfg["torch_dtype"] = cfg["text_config"]["torch_dtype"] = "float32"
    (d / "config.json").write_text(json.dumps(cfg))
    return OpenVLAOFTPolicy.from_pretrained(d, device="cpu")


def _obs(ref, i: int) -> dict:
    # vla_gym's env emits upright frames, raw[::-1]; the reference turns the raw frame 180 degrees itself
    return {"images": {"agentview": ref[f"raw_agentview_{i}"][::-1], "wrist": ref[f"raw_wrist_{i}"][::-1]},
            "state": ref[f"state_{i}"], "instruction": str(ref[f"instruction_{i}"])}


def test_stored_dtypes_are_the_releases():
    from safetensors.torch import load_file

    head = torch.load(DATA / "checkpoint" / "action_head--150000_checkpoint.pt", weights_only=True)
    proj = torch.load(DATA / "checkpoint" / "proprio_projector--150000_checkpoint.pt", weights_only=True)
    assert {v.dtype for v in head.values()} == {torch.bfloat16}
    assert {v.dtype for v in proj.values()} == {torch.float32}
    assert any(v.float().ne(v.to(torch.bfloat16).float()).any() for v in proj.values())  # rounding matters
    shard = load_file(str(DATA / "checkpoint" / "model-00001-of-00002.safetensors"))
    assert {v.dtype for v in shard.values()} == {torch.bfloat16}


@pytest.mark.parametrize("case", range(CASES))
def test_env_actions_equal_the_reference_at_fp32(policy, ref, case):
    chunk = policy.act([_obs(ref, case)])
    assert policy.model.vla.compute_dtype == torch.float32
    np.testing.assert_allclose(chunk.actions[0], ref[f"actions_{case}"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", range(CASES))
def test_proprio_token_equals_the_reference_at_fp32(policy, ref, case):
    """The token the reference's projector (get_proprio_projector: bf16 module, then loaded) gives.

    One token among ~650 moves this tiny model's actions by only ~5e-6 when the projector is not
    rounded (measured on main), below the actions' tolerance; the token itself shows it (~1e-3)."""
    seen = {}
    hook = policy.model.proprio_projector.register_forward_hook(lambda m, a, out: seen.update(token=out))
    try:
        policy.act([_obs(ref, case)])
    finally:
        hook.remove()
    np.testing.assert_allclose(seen["token"].numpy(), ref[f"proprio_token_{case}"], rtol=0, atol=1e-6)


def test_heads_hold_the_bf16_rounded_weights_in_fp32(policy):
    from vla_gym.policies.toolkit.safe_load import load_torch_state_dict

    stored = load_torch_state_dict(DATA / "checkpoint" / "proprio_projector--150000_checkpoint.pt")
    for name, p in policy.model.proprio_projector.named_parameters():
        assert p.dtype == torch.float32
        assert torch.equal(p, stored[name].to(torch.bfloat16).float())
