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
from vla_gym.policies.openvla.config import OpenVLAConfig
from vla_gym.policies.openvla.modeling import PrismaticVisionBackbone
from vla_gym.policies.openvla_oft.film import FiLMedPrismaticVisionBackbone, load_film_backbone
from vla_gym.policies.openvla_oft.make_tiny import FILM_LORA_RANK
from vla_gym.policies.openvla_oft.policy import merge_lora
from vla_gym.policies.toolkit.safe_load import load_torch_state_dict as load_component

from vla_gym.policies.testing import observation, observation_batch
from vla_gym.policy import ChunkExecution, act_one


FILM_FILE = "vision_backbone--150000_checkpoint.pt"


@pytest.fixture(scope="module")
def oft(tiny_dirs) -> OpenVLAOFTPolicy:
    return OpenVLAOFTPolicy.from_pretrained(tiny_dirs["openvla-oft"], device="cpu")


@pytest.fixture(scope="module")
def oft_film(tiny_dirs) -> OpenVLAOFTPolicy:
    return OpenVLAOFTPolicy.from_pretrained(tiny_dirs["openvla-oft-film"], device="cpu")


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
    # stored dtypes as finetune.py saves them: the head made bf16 (to_bf16=True), the projector fp32
    assert {v.dtype for v in raw.values()} == {torch.bfloat16}
    proj_raw = torch.load(d / "proprio_projector--150000_checkpoint.pt", weights_only=True)
    assert {v.dtype for v in proj_raw.values()} == {torch.float32}
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
    result = oft.act([observation(wrist=True)])
    assert result.actions.shape == (1, 8, 7)
    assert set(result.info["timing_ms"]) == {"preprocess", "model", "postprocess"}
    chunk = result.actions[0]
    assert chunk.dtype == np.float32 and np.all(np.isfinite(chunk))
    assert set(np.unique(chunk[:, -1])) <= {-1.0, 0.0, 1.0}
    assert (
        oft.inputs.cameras == ("agentview", "wrist")
        and oft.inputs.uses_state
        and oft.inputs.image_size == 256
    )
    info = oft.info()
    assert info.chunk_size == 8 and info.name == "openvla_oft" and info.weight_bytes > 0
    assert oft.execution == ChunkExecution(mode="open_loop", replan_steps=8)
    assert oft.reference_scene_seed == 0 and oft.loads_weights
    assert set(oft.quantization_skip) == {"lm_head", "action_head", "proprio_projector", "scale", "shift"}


@pytest.fixture(scope="module")
def oft_fp32(tiny_dirs) -> OpenVLAOFTPolicy:
    return OpenVLAOFTPolicy.from_pretrained(tiny_dirs["openvla-oft"], device="cpu", quantization="fp32")


@pytest.fixture(scope="module")
def oft_film_fp32(tiny_dirs) -> OpenVLAOFTPolicy:
    return OpenVLAOFTPolicy.from_pretrained(tiny_dirs["openvla-oft-film"], device="cpu", quantization="fp32")


@pytest.mark.parametrize(
    "which,atol",
    [("oft_fp32", 5e-6), ("oft", 2e-2), ("oft_film_fp32", 5e-6), ("oft_film", 2e-2)],
)
def test_batched_chunks_equal_single_calls_with_different_prompts(request, which, atol):
    """Row b of a B = 3 batch (different images, states and instructions of different token
    lengths, right-padded) equals the B = 1 chunk of observation b, within a measured tolerance.

    Not bit-identical: the batched matmuls round differently from B = 1's (a batch of three copies
    of one observation, with no padding at all, differs from B = 1 just as much). Measured on the
    tiny checkpoints, max |d| of the normalised head output (|x| <~ 1.6): 7e-7 (OFT) and 8e-7
    (FiLM) in fp32; 0.0078 = one bf16 ulp in bf16 (both); tolerances 5e-6 and 2e-2. The gripper
    command (a sign) is identical for these inputs.
    """
    pol = request.getfixturevalue(which)
    batch = observation_batch(3, wrist=True)
    inputs = pol.preprocess(batch)
    lengths = inputs.attention_mask.sum(dim=1).tolist()
    assert len(set(lengths)) == 3 and inputs.pixel_values.shape == (3, 12, 224, 224)
    raw = pol.model.predict(*inputs)
    for b, obs in enumerate(batch):
        one = pol.model.predict(*pol.preprocess([obs]))
        torch.testing.assert_close(raw[b : b + 1], one, rtol=0, atol=atol)
    actions = pol.act(batch, env_ids=[2, 0, 1]).actions
    singles = np.stack([act_one(pol, obs) for obs in batch])
    assert actions.shape == (3, 8, 7)
    np.testing.assert_allclose(actions[..., :-1], singles[..., :-1], rtol=0, atol=atol)
    np.testing.assert_array_equal(actions[..., -1], singles[..., -1])


def test_padding_does_not_leak_into_the_bidirectional_attention(oft_fp32):
    """What sits at the padded positions (as keys, and as queries) does not change any chunk."""
    batch = observation_batch(2, wrist=True)
    inputs = oft_fp32.preprocess(batch)
    assert inputs.attention_mask.min() == 0  # one row is padded
    base = oft_fp32.model.predict(*inputs)
    llama = oft_fp32.model.vla.language_model.model
    seen = {}

    def garble(module, args, kwargs):
        keys = kwargs["attention_mask"][:, 0, 0, :]  # (B, S): False on padding
        embeds = kwargs["inputs_embeds"].clone()
        embeds[~keys] = 1e3 * torch.randn_like(embeds[~keys])
        seen["padded"] = int((~keys).sum())
        return args, {**kwargs, "inputs_embeds": embeds}

    handle = llama.register_forward_pre_hook(garble, with_kwargs=True)
    try:
        garbled = oft_fp32.model.predict(*inputs)
    finally:
        handle.remove()
    assert seen["padded"] > 0
    assert torch.equal(garbled, base)


def test_preprocess_two_images_and_normalised_proprio(oft):
    obs = observation(wrist=True)
    _, pixel_values, proprio, _ = oft.preprocess([obs])
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
    inputs = oft.preprocess([observation(wrist=True)])
    emb = oft.model.vla.language_model.get_input_embeddings().weight
    before = oft.model.predict(*inputs)
    saved = emb.data[2].clone()
    try:
        emb.data[2] += 1.0
        after = oft.model.predict(*inputs)
    finally:
        emb.data[2] = saved
    assert not torch.allclose(before, after)
    assert torch.equal(oft.model.predict(*inputs), before)


def test_proprio_changes_the_chunk(oft):
    obs = observation(wrist=True)
    a = act_one(oft, obs)
    obs["state"] = obs["state"] + np.float32(0.05)
    assert not np.array_equal(a, act_one(oft, obs))


def _to_float32_checkpoint(d: Path) -> None:
    """Rewrite a tiny checkpoint's VLA shards (not the heads' .pt files) in float32."""
    from safetensors.torch import save_file

    for shard in sorted(d.glob("model-*.safetensors")):
        fp32 = {k: v.float() for k, v in load_file(str(shard)).items()}
        save_file(fp32, str(shard), metadata={"format": "pt"})
    cfg = json.loads((d / "config.json").read_text())
    cfg["torch_dtype"] = cfg["text_config"]["torch_dtype"] = "float32"
    (d / "config.json").write_text(json.dumps(cfg))


def test_heads_run_in_the_models_dtype_fp32(tiny_copy):
    """An fp32 model gets fp32 heads fed fp32 hidden states, their weights rounded through bf16 at load
    as the reference's get_action_head / get_proprio_projector round them."""
    from vla_gym.policies.openvla_oft.heads import L1RegressionActionHead, ProprioProjector

    d = tiny_copy("openvla-oft")
    _to_float32_checkpoint(d)
    policy = OpenVLAOFTPolicy.from_pretrained(d, device="cpu")
    model = policy.model
    assert model.vla.compute_dtype == torch.float32
    for module in (model.action_head, model.proprio_projector):
        assert {p.dtype for p in module.parameters()} == {torch.float32}
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.vla.language_model.model.register_forward_hook(
            lambda m, args, out: seen.update(hidden=out.last_hidden_state)
        ),
        model.proprio_projector.register_forward_hook(lambda m, args, out: seen.update(proprio_in=args[0])),
        model.action_head.register_forward_hook(
            lambda m, args, out: seen.update(head_in=args[0], head_out=out)
        ),
    ]
    try:
        ids, pixel_values, proprio, mask = policy.preprocess([observation(wrist=True)])
        chunk = model.predict(ids, pixel_values, proprio, mask)
    finally:
        for h in hooks:
            h.remove()
    assert seen["proprio_in"].dtype == seen["head_in"].dtype == seen["head_out"].dtype == torch.float32
    # The same hidden states through heads built by hand as get_action_head / get_proprio_projector
    # build them (bf16 modules, then loaded), then cast to fp32.
    head = L1RegressionActionHead(policy.cfg.llm_dim, action_dim=7, num_actions_chunk=8).to(torch.bfloat16)
    head_file = d / "action_head--150000_checkpoint.pt"
    head.load_state_dict(load_component(head_file))
    proj = ProprioProjector(policy.cfg.llm_dim, proprio_dim=8).to(torch.bfloat16)
    proj_file = d / "proprio_projector--150000_checkpoint.pt"
    proj.load_state_dict(load_component(proj_file))
    head.float()
    proj.float()
    n_act = 8 * 7
    start = 2 * model.vla.vision_backbone.num_patches + 1 + ids.shape[1] - 1  # patches, proprio, prompt
    with torch.no_grad():
        want = head(seen["hidden"][:, start : start + n_act])
        assert torch.equal(seen["proprio_in"], proprio)
        assert torch.equal(model.proprio_projector(proprio), proj(proprio))
    assert torch.equal(chunk, want)


def test_oft_policy_refuses_a_plain_openvla_checkpoint(tiny_dirs):
    with pytest.raises(CheckpointError, match=r"not an OpenVLA-OFT checkpoint.*policy=openvla\b"):
        OpenVLAOFTPolicy.from_pretrained(tiny_dirs["openvla"], device="cpu")


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


def test_hydra_config_instantiates_the_policy(tiny_dirs):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf"
    cfg = OmegaConf.load(conf / "policy" / "openvla_oft.yaml")
    cfg.checkpoint = str(tiny_dirs["openvla-oft"])
    cfg.device = "cpu"
    for key in ("replan_steps", "chunk_mode", "scene_seed"):  # runner overrides, if a config sets them
        cfg.pop(key, None)
    pol = instantiate(cfg, quantization=OmegaConf.create({"name": "none"}))
    assert isinstance(pol, OpenVLAOFTPolicy)
    assert act_one(pol, observation(wrist=True)).shape == (8, 7)


def test_gripper_uses_reference_conventions():
    assert decoding.libero_gripper(np.array([[0.0] * 6 + [1.0]]))[0, -1] == -1.0


# --- FiLM ---------------------------------------------------------------------------------------


def _fresh_film_backbone(policy: OpenVLAOFTPolicy) -> FiLMedPrismaticVisionBackbone:
    cfg: OpenVLAConfig = policy.cfg
    return FiLMedPrismaticVisionBackbone(PrismaticVisionBackbone(cfg).to(torch.bfloat16), cfg.llm_dim, device="meta")


def _language(policy: OpenVLAOFTPolicy, instruction: str) -> torch.Tensor:
    """Raw embeddings of ``<s> prompt 29871 </s>`` (the non-action positions of the reference)."""
    ids = policy.tokenizer.encode_prompt(instruction) + [2]
    return policy.model.vla.language_model.get_input_embeddings()(torch.tensor([ids]))


def test_film_checkpoint_file_is_keyed_like_finetune_py(tiny_dirs):
    raw = torch.load(tiny_dirs["openvla-oft-film"] / FILM_FILE, weights_only=True)
    assert not any(k.startswith("module.") for k in raw)  # vla.module.vision_backbone.state_dict()
    blk = "vision_backbone.fused_featurizer.blocks.1."
    assert {
        blk + "scale.weight",
        blk + "scale.bias",
        blk + "shift.weight",
        blk + "shift.bias",
        blk + "block.norm1.weight",
        blk + "block.attn.qkv.base_layer.weight",
        blk + "block.attn.qkv.lora_A.default.weight",
        blk + "block.attn.qkv.lora_B.default.weight",
        "vision_backbone.featurizer.blocks.0.block.ls1.scale_factor",
        "vision_backbone.featurizer.patch_embed.proj.lora_A.default.weight",
    } <= set(raw)
    assert not any("scale.lora_" in k or "shift.lora_" in k for k in raw)  # FiLM added after LoRA


def test_film_checkpoint_loads_key_for_key_with_lora_merged(tiny_dirs, oft_film):
    raw = torch.load(tiny_dirs["openvla-oft-film"] / FILM_FILE, weights_only=True)
    backbone = oft_film.model.vla.vision_backbone
    assert oft_film.model.use_film and isinstance(backbone, FiLMedPrismaticVisionBackbone)
    loaded = backbone.state_dict()
    expected = {k.replace(".base_layer.", ".") for k in raw if ".lora_" not in k}
    assert set(loaded) == expected
    assert all(v.dtype == torch.bfloat16 and not v.is_meta for v in loaded.values())
    for key in expected:
        if key in raw:  # not a LoRA layer: copied as is (cast to bf16)
            assert torch.equal(loaded[key], raw[key].to(torch.bfloat16)), key
    scaling = min(FILM_LORA_RANK, 16) / FILM_LORA_RANK
    assert scaling == 0.5
    for layer in ("vision_backbone.featurizer.blocks.2.block.attn.qkv", "vision_backbone.fused_featurizer.patch_embed.proj"):
        base = raw[f"{layer}.base_layer.weight"]
        a = raw[f"{layer}.lora_A.default.weight"].float().flatten(1)
        b = raw[f"{layer}.lora_B.default.weight"].float().flatten(1)
        want = (base.float() + (b @ a).reshape(base.shape) * scaling).to(torch.bfloat16)
        assert torch.equal(loaded[f"{layer}.weight"], want)
        assert not torch.equal(want, base.to(torch.bfloat16))
        assert torch.equal(loaded[f"{layer}.bias"], raw[f"{layer}.base_layer.bias"].to(torch.bfloat16))


@pytest.mark.parametrize("damage", ["drop_film_key", "extra_key", "drop_lora_b"])
def test_film_checkpoint_load_is_strict(tiny_dirs, oft_film, tmp_path, damage):
    raw = torch.load(tiny_dirs["openvla-oft-film"] / FILM_FILE, weights_only=True)
    if damage == "drop_film_key":
        del raw["vision_backbone.featurizer.blocks.1.shift.bias"]
    elif damage == "extra_key":
        raw["vision_backbone.featurizer.blocks.3.scale.weight"] = torch.zeros(32, 64)
    else:
        del raw["vision_backbone.featurizer.blocks.0.block.mlp.fc1.lora_B.default.weight"]
    file = tmp_path / FILM_FILE
    torch.save(raw, file)
    with pytest.raises(CheckpointError, match="blocks"):
        load_film_backbone(_fresh_film_backbone(oft_film), file, torch.bfloat16)


def test_ddp_prefixed_film_checkpoint_loads_the_same(tiny_dirs, oft_film, tmp_path):
    raw = torch.load(tiny_dirs["openvla-oft-film"] / FILM_FILE, weights_only=True)
    file = tmp_path / FILM_FILE
    torch.save({f"module.{k}": v for k, v in raw.items()}, file)
    backbone = _fresh_film_backbone(oft_film)
    load_film_backbone(backbone, file, torch.bfloat16)
    want = oft_film.model.vla.vision_backbone.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in backbone.state_dict().items())


def test_film_makes_pixel_features_depend_on_the_instruction(oft_film):
    pixel_values = oft_film.preprocess([observation(wrist=True)]).pixel_values
    backbone = oft_film.model.vla.vision_backbone
    with torch.no_grad():
        pix = pixel_values[:, :6].to(torch.bfloat16)
        a = backbone(pix, _language(oft_film, "put the bowl on the plate"))
        b = backbone(pix, _language(oft_film, "open the top drawer of the cabinet"))
        a2 = backbone(pix, _language(oft_film, "put the bowl on the plate"))
    assert a.shape == (1, backbone.num_patches, backbone.embed_dim)
    assert torch.equal(a, a2) and not torch.equal(a, b)


def test_identity_film_equals_the_plain_backbone(oft_film):
    """Zero gamma/beta: x * (1 + 0) + 0 == x, so the FiLMed towers reduce to the plain ones exactly."""
    film = _fresh_film_backbone(oft_film)
    state = {k: v.clone() for k, v in oft_film.model.vla.vision_backbone.state_dict().items()}
    for k in state:
        if ".scale." in k or ".shift." in k:
            state[k].zero_()
    film.load_state_dict(state, strict=True, assign=True)
    plain = PrismaticVisionBackbone(oft_film.cfg).to(torch.bfloat16)
    plain_state = {
        k[len("vision_backbone.") :].replace(".block.", "."): v
        for k, v in state.items()
        if ".scale." not in k and ".shift." not in k
    }
    plain.load_state_dict(plain_state, strict=True)
    pixel_values = oft_film.preprocess([observation(wrist=True)]).pixel_values
    with torch.no_grad():
        pix = pixel_values.to(torch.bfloat16)
        want = torch.cat([plain(pix[:, :6]), plain(pix[:, 6:])], dim=1)
        for instruction in ("put the bowl on the plate", "open the drawer"):
            assert torch.equal(film(pix, _language(oft_film, instruction)), want)
        # and the real (non-zero) FiLM parameters do change the features
        assert not torch.equal(oft_film.model.vla.vision_backbone(pix, _language(oft_film, "open the drawer")), want)


def test_film_language_is_the_mean_over_prompt_and_stop_embeddings(oft_film):
    """As ``input_embeddings[~all_actions_mask]``: <s>, prompt, 29871 and </s>; no action slots."""
    batch = observation_batch(3, wrist=True)  # instructions of different lengths: padding stays out
    seen = {}
    backbone = oft_film.model.vla.vision_backbone
    handle = backbone.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(lang=kwargs["average_language_embedding"].clone()),
        with_kwargs=True,
    )
    try:
        oft_film.act(batch)
    finally:
        handle.remove()
    assert seen["lang"].shape == (3, oft_film.cfg.llm_dim)
    for b, obs in enumerate(batch):
        want = _language(oft_film, obs["instruction"])  # (1, len(prompt) + 1, llm_dim)
        assert want.shape[1] == len(oft_film.tokenizer.encode_prompt(obs["instruction"])) + 1
        assert torch.equal(seen["lang"][b : b + 1], want.mean(dim=1))


def test_film_policy_acts_and_follows_the_instruction(oft_film):
    obs = observation(wrist=True)
    chunk = act_one(oft_film, obs)
    assert chunk.shape == (8, 7) and chunk.dtype == np.float32 and np.all(np.isfinite(chunk))
    obs["instruction"] = "open the top drawer and put the bowl inside"
    assert not np.array_equal(chunk, act_one(oft_film, obs))


def test_use_film_flag_must_agree_with_the_checkpoint(tiny_dirs):
    with pytest.raises(CheckpointError, match="use_film=True"):
        OpenVLAOFTPolicy.from_pretrained(tiny_dirs["openvla-oft"], device="cpu", use_film=True)
    with pytest.raises(CheckpointError, match="use_film=False"):
        OpenVLAOFTPolicy.from_pretrained(tiny_dirs["openvla-oft-film"], device="cpu", use_film=False)


def test_corrupted_film_checkpoint_is_a_clear_error(tiny_copy):
    d = tiny_copy("openvla-oft-film")
    (d / FILM_FILE).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=FILM_FILE):
        OpenVLAOFTPolicy.from_pretrained(d, device="cpu")


def test_film_sits_between_attention_and_mlp(oft_film):
    """Reference order: x += attn branch; x = x * (1 + gamma) + beta; x += mlp branch."""
    wrapped = oft_film.model.vla.vision_backbone.vision_backbone.fused_featurizer.blocks[0]
    blk = wrapped.block
    torch.manual_seed(0)
    x = torch.randn(1, 5, blk.norm1.normalized_shape[0]).to(torch.bfloat16)
    lang = _language(oft_film, "open the drawer").mean(dim=1)
    with torch.no_grad():
        gamma, beta = wrapped.scale(lang)[:, None], wrapped.shift(lang)[:, None]
        h = x + blk.ls1(blk.attn(blk.norm1(x)))
        h = h * (1 + gamma) + beta
        want = h + blk.ls2(blk.mlp(blk.norm2(h)))
        assert torch.equal(wrapped(x, lang), want)
        assert not torch.equal(wrapped(x, lang), blk(x) * (1 + gamma) + beta)


def test_int8_leaves_film_and_heads_unquantized_as_the_reference(tiny_dirs):
    """The reference adds FiLM after its 8-bit load: scale/shift and the heads stay float."""
    from torch import nn

    policy = OpenVLAOFTPolicy.from_pretrained(tiny_dirs["openvla-oft-film"], device="cpu",
                                              quantization={"name": "int8", "dtype": "bf16"})
    kinds = {name.rsplit(".", 1)[-1]: type(m) for name, m in policy.model.named_modules()
             if name.endswith((".scale", ".shift", "action_head.model.fc1"))}
    assert kinds and all(t is nn.Linear for t in kinds.values()), kinds
    quantized = [n for n, m in policy.model.named_modules() if "QLinear" in type(m).__name__]
    assert any("language_model" in n for n in quantized)
    assert act_one(policy, observation(wrist=True)).shape == (8, 7)
