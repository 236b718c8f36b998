"""OpenVLA-OFT adapter: tiny checkpoint in the finetune.py layout, loaded through the real path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from vla_gym.policies.openvla import CheckpointError, decoding, images, load_openvla_model
from vla_gym.policies.openvla.make_tiny import ACTION_STATS, PROPRIO_STATS
from vla_gym.policies.openvla_oft import OpenVLAOFTPolicy
from vla_gym.policies.openvla_oft.policy import load_component, merge_lora

from tests.policies.helpers import observation


@pytest.fixture(scope="module")
def oft(tiny_dirs) -> OpenVLAOFTPolicy:
    return OpenVLAOFTPolicy.from_pretrained(tiny_dirs["openvla-oft"], device="cpu")


def test_checkpoint_layout_and_component_names(tiny_dirs):
    d = tiny_dirs["openvla-oft"]
    names = {p.name for p in d.iterdir()}
    assert {
        "action_head--150000_checkpoint.pt",
        "proprio_projector--150000_checkpoint.pt",
        "dataset_statistics.json",
        "config.json",
        "model.safetensors.index.json",
        "lora_adapter",
    } <= names
    assert {p.name for p in (d / "lora_adapter").iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    raw = torch.load(d / "action_head--150000_checkpoint.pt", weights_only=True)
    assert all(k.startswith("module.model.") for k in raw)  # saved from DDP
    head = load_component(d / "action_head--150000_checkpoint.pt")
    assert {
        "model.layer_norm1.weight",
        "model.fc1.weight",
        "model.mlp_resnet_blocks.1.ffn.1.weight",
        "model.layer_norm2.bias",
        "model.fc2.weight",
    } <= set(head)
    assert set(load_component(d / "proprio_projector--150000_checkpoint.pt")) == {
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    }


def test_lora_adapter_merged_with_peft_equals_the_released_merged_weights(tiny_dirs):
    base, _, _ = load_openvla_model(tiny_dirs["openvla"])
    merged = merge_lora(base, tiny_dirs["openvla-oft"] / "lora_adapter").state_dict()
    released, _, _ = load_openvla_model(tiny_dirs["openvla-oft"])
    released = released.state_dict()
    assert set(merged) == set(released)
    for key in merged:
        torch.testing.assert_close(merged[key].float(), released[key].float(), rtol=0, atol=2e-2)
    # Hand-check one layer: W + B A * alpha / r.
    adapter = load_file(str(tiny_dirs["openvla-oft"] / "lora_adapter" / "adapter_model.safetensors"))
    cfg = json.loads((tiny_dirs["openvla-oft"] / "lora_adapter" / "adapter_config.json").read_text())
    name = "language_model.model.layers.0.self_attn.q_proj"
    a = adapter[f"base_model.model.{name}.lora_A.weight"].float()
    b = adapter[f"base_model.model.{name}.lora_B.weight"].float()
    base_w = load_openvla_model(tiny_dirs["openvla"])[0].state_dict()[f"{name}.weight"].float()
    expected = base_w + b @ a * cfg["lora_alpha"] / cfg["r"]
    torch.testing.assert_close(merged[f"{name}.weight"].float(), expected, rtol=0, atol=2e-2)
    assert not torch.allclose(expected, base_w)


def test_act_returns_8x7_chunk(oft):
    chunk = oft.act(observation(wrist=True))
    assert chunk.shape == (8, 7) and chunk.dtype == np.float32 and np.all(np.isfinite(chunk))
    assert set(np.unique(chunk[:, -1])) <= {-1.0, 0.0, 1.0}
    assert (
        oft.inputs.cameras == ("agentview", "wrist")
        and oft.inputs.uses_state
        and oft.inputs.image_size == 256
    )
    info = oft.info()
    assert info.chunk_size == 8 and info.name == "openvla_oft" and info.weight_bytes > 0


def test_preprocess_two_images_and_normalised_proprio(oft):
    obs = observation(wrist=True)
    ids, pixel_values, proprio = oft.preprocess(obs)
    assert pixel_values.shape == (1, 12, 224, 224)
    for i, cam in enumerate(("agentview", "wrist")):
        ref = oft.pixels(images.reference_image(obs["images"][cam], 224, center_crop=True))
        assert torch.equal(pixel_values[0, 6 * i : 6 * i + 6], ref)
    q01, q99 = np.array(PROPRIO_STATS["q01"]), np.array(PROPRIO_STATS["q99"])
    expected = np.clip(2 * (obs["state"].astype(np.float64) - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)
    np.testing.assert_allclose(proprio[0].numpy(), expected, atol=1e-6)


def test_unnormalisation_as_oft_against_hand_computed_values(oft):
    normalized = np.linspace(-1, 1, 56).reshape(8, 7)
    q01, q99, mask = (np.array(ACTION_STATS[k], dtype=float) for k in ("q01", "q99", "mask"))
    expected = np.where(mask, 0.5 * (normalized + 1) * (q99 - q01 + 1e-8) + q01, normalized)
    expected[:, -1] = -np.sign(2 * expected[:, -1] - 1)
    np.testing.assert_allclose(oft.postprocess(normalized), expected.astype(np.float32), atol=1e-6)


def test_parallel_decoding_uses_bidirectional_attention(oft):
    """The </s> token sits after every action slot: it can only matter if attention is not causal."""
    ids, pixel_values, proprio = oft.preprocess(observation(wrist=True))
    emb = oft.model.vla.language_model.get_input_embeddings().weight
    before = oft.model.predict(ids, pixel_values, proprio)
    saved = emb.data[2].clone()
    try:
        emb.data[2] += 1.0
        after = oft.model.predict(ids, pixel_values, proprio)
    finally:
        emb.data[2] = saved
    assert not torch.allclose(before, after)
    assert torch.equal(oft.model.predict(ids, pixel_values, proprio), before)


def test_proprio_changes_the_chunk(oft):
    obs = observation(wrist=True)
    a = oft.act(obs)
    obs["state"] = obs["state"] + np.float32(0.05)
    assert not np.array_equal(a, oft.act(obs))


def test_missing_action_head_is_a_clear_error(tiny_copy):
    d = tiny_copy("openvla-oft")
    (d / "action_head--150000_checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match="action_head"):
        OpenVLAOFTPolicy.from_pretrained(d, device="cpu")


def test_two_action_heads_are_ambiguous(tiny_copy):
    d = tiny_copy("openvla-oft")
    (d / "action_head--50000_checkpoint.pt").write_bytes(
        (d / "action_head--150000_checkpoint.pt").read_bytes()
    )
    with pytest.raises(CheckpointError, match="exactly one action_head"):
        OpenVLAOFTPolicy.from_pretrained(d, device="cpu")


def test_corrupted_proprio_projector_is_a_clear_error(tiny_copy):
    d = tiny_copy("openvla-oft")
    (d / "proprio_projector--150000_checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="proprio_projector--150000_checkpoint.pt"):
        OpenVLAOFTPolicy.from_pretrained(d, device="cpu")


def test_missing_proprio_statistics_are_refused(tiny_copy):
    d = tiny_copy("openvla-oft")
    stats = json.loads((d / "dataset_statistics.json").read_text())
    del stats["libero_spatial_no_noops"]["proprio"]
    (d / "dataset_statistics.json").write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match="proprio"):
        OpenVLAOFTPolicy.from_pretrained(d, device="cpu")


def test_film_checkpoints_are_refused_explicitly(tiny_copy):
    d = tiny_copy("openvla-oft")
    (d / "vision_backbone--150000_checkpoint.pt").write_bytes(b"")
    with pytest.raises(NotImplementedError, match="FiLM"):
        OpenVLAOFTPolicy.from_pretrained(d, device="cpu")


def test_hydra_config_instantiates_the_policy(tiny_dirs):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf"
    cfg = OmegaConf.load(conf / "policy" / "openvla_oft.yaml")
    cfg.checkpoint = str(tiny_dirs["openvla-oft"])
    cfg.device = "cpu"
    assert cfg.pop("replan_steps") == 8
    pol = instantiate(cfg, quantization=OmegaConf.create({"name": "none"}))
    assert isinstance(pol, OpenVLAOFTPolicy)
    assert pol.act(observation(wrist=True)).shape == (8, 7)


def test_gripper_uses_reference_conventions():
    assert decoding.libero_gripper(np.array([[0.0] * 6 + [1.0]]))[0, -1] == -1.0
