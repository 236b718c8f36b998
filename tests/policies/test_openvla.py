"""OpenVLA adapter: tiny checkpoints in the release layout, loaded through the real code path."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from vla_gym.policies.openvla import (
    CheckpointError,
    OpenVLAPolicy,
    UnnormKeyError,
    decoding,
    images,
    load_openvla_model,
)
from vla_gym.policies.openvla.make_tiny import ACTION_STATS, TINY_VOCAB
from vla_gym.policies.openvla.processor import PixelTransform, PromptTokenizer
from vla_gym.policies.toolkit import tf_image

from vla_gym.policies.testing import make_frame, observation, observation_batch
from vla_gym.policy import ActionChunk, ChunkExecution, act_one

DATA = Path(__file__).parent / "data"

# Keys of the released openvla-7b config.json (OpenVLAConfig.to_dict() of transformers 4.40.1).
RELEASE_CONFIG_KEYS = {
    "arch_specifier",
    "architectures",
    "auto_map",
    "hf_llm_id",
    "image_resize_strategy",
    "image_sizes",
    "llm_backbone_id",
    "llm_max_length",
    "model_type",
    "n_action_bins",
    "norm_stats",
    "output_projector_states",
    "pad_to_multiple_of",
    "pad_token_id",
    "text_config",
    "timm_model_ids",
    "timm_override_act_layers",
    "torch_dtype",
    "transformers_version",
    "use_fused_vision_backbone",
    "vision_backbone_id",
}
RELEASE_FILES = {
    "config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "dataset_statistics.json",
    "generation_config.json",
    "added_tokens.json",
    "processor_config.json",
}


@pytest.fixture(scope="module")
def policy(tiny_dirs) -> OpenVLAPolicy:
    return OpenVLAPolicy.from_pretrained(tiny_dirs["openvla"], device="cpu")


@pytest.fixture(scope="module")
def policy_fp32(tiny_dirs) -> OpenVLAPolicy:
    return OpenVLAPolicy.from_pretrained(tiny_dirs["openvla"], device="cpu", quantization={"name": "fp32"})


# ---------------------------------------------------------------- layout and weights


def test_tiny_checkpoint_has_release_files_and_config_keys(tiny_dirs):
    d = tiny_dirs["openvla"]
    names = {p.name for p in d.iterdir()}
    assert RELEASE_FILES <= names
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    }
    cfg = json.loads((d / "config.json").read_text())
    assert RELEASE_CONFIG_KEYS <= set(cfg)
    assert set(cfg) - RELEASE_CONFIG_KEYS == {"vla_gym_timm_overrides"}
    assert cfg["timm_model_ids"] == ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
    assert cfg["text_config"]["vocab_size"] - cfg["pad_to_multiple_of"] == TINY_VOCAB


def test_tokenizer_keeps_256_action_ids_at_the_end_of_the_vocab(tiny_dirs):
    tok = PromptTokenizer.from_dir(tiny_dirs["openvla"])
    vocab = tok.tokenizer.get_vocab()
    assert tok.tokenizer.token_to_id("<PAD>") == TINY_VOCAB
    action_ids = range(TINY_VOCAB - 256, TINY_VOCAB)
    assert all(tok.tokenizer.id_to_token(i) is not None for i in action_ids)
    assert max(v for k, v in vocab.items() if k != "<PAD>") == TINY_VOCAB - 1
    assert (tok.bos_id, tok.eos_id) == (1, 2)


def test_state_dict_matches_release_names_key_for_key(tiny_dirs):
    d = tiny_dirs["openvla"]
    on_disk = {}
    for shard in sorted(d.glob("model-*.safetensors")):
        on_disk.update(load_file(str(shard)))
    model, _, _ = load_openvla_model(d)
    loaded = model.state_dict()
    assert set(loaded) == set(on_disk)
    for key, value in on_disk.items():
        assert torch.equal(loaded[key], value), key
    # Names that only the released layout has:
    for key in (
        "vision_backbone.featurizer.blocks.0.ls1.scale_factor",
        "vision_backbone.featurizer.reg_token",
        "vision_backbone.fused_featurizer.attn_pool.latent",
        "projector.fc3.weight",
        "language_model.model.embed_tokens.weight",
        "language_model.lm_head.weight",
    ):
        assert key in loaded
    assert not any("gamma" in k for k in loaded)
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32


def test_prismatic_training_checkpoint_converts_to_the_same_weights(tiny_dirs):
    hf, _, _ = load_openvla_model(tiny_dirs["openvla"])
    run, _, _ = load_openvla_model(tiny_dirs["openvla-prismatic"], base_checkpoint=tiny_dirs["openvla"])
    a, b = hf.state_dict(), run.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_prismatic_run_without_base_checkpoint_says_what_to_pass(tiny_dirs):
    with pytest.raises(CheckpointError, match="base_checkpoint"):
        load_openvla_model(tiny_dirs["openvla-prismatic"])


# ---------------------------------------------------------------- pixels


def test_orientation_reproduces_the_reference_180_degree_turn():
    raw = make_frame(64)  # raw OpenGL frame (upside down)
    upright = raw[::-1]  # what the vla_gym env emits
    reference = raw[::-1, ::-1]  # what the OpenVLA LIBERO eval feeds
    assert np.array_equal(images.reference_orientation(upright), reference)
    assert not np.array_equal(images.reference_orientation(upright), upright)
    assert not np.array_equal(images.reference_orientation(upright), raw)


@pytest.mark.parametrize("crop", [False, True])
def test_image_path_matches_tensorflow_reference(crop):
    """JPEG round trip + lanczos3 + center crop vs. the TF 2.21 outputs stored in data/."""
    golden = np.load(DATA / "tf_libero_image_path.npz")
    upright = make_frame()[::-1]
    ours = images.reference_image(upright, 224, center_crop=crop)
    assert np.array_equal(ours, golden["crop" if crop else "nocrop"])


def _tf_lanczos3_sizes() -> list[tuple[int, int]]:
    keys = np.load(DATA / "tf_lanczos3.npz").files
    return sorted({(int(k.split("_")[1]), int(k.split("_")[2])) for k in keys if k.startswith("w_")})


@pytest.mark.parametrize("n_in,n_out", _tf_lanczos3_sizes())
def test_lanczos3_weights_equal_tensorflows_bit_for_bit(n_in, n_out):
    """Every weight as TensorFlow 2.21 computes it (read out of TF with one-hot inputs)."""
    tf = np.load(DATA / "tf_lanczos3.npz")
    expected = np.zeros((n_out, n_in), dtype=np.float32)
    key = f"w_{n_in}_{n_out}"
    expected[tf[key + "_dst"], tf[key + "_src"]] = tf[key + "_val"]
    index, weight = tf_image.lanczos3_spans(n_in, n_out)
    ours = np.zeros_like(expected)
    for dst in range(n_out):
        ours[dst, index[dst][weight[dst] != 0]] = weight[dst][weight[dst] != 0]
    assert np.array_equal(ours.view(np.uint32), expected.view(np.uint32))


def test_lanczos3_kernel_uses_the_c_librarys_sinf():
    """TF's kernel calls std::sin on floats (libm sinf); numpy's float32 sin is not that function."""
    import ctypes
    import ctypes.util

    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.sinf.restype, libm.sinf.argtypes = ctypes.c_float, [ctypes.c_float]
    _, weight = tf_image.lanczos3_spans(256, 224)
    x = np.linspace(0, 3 * np.pi, 5001, dtype=np.float32)
    expected = np.array([libm.sinf(float(v)) for v in x], dtype=np.float32)
    assert np.array_equal(tf_image.sinf(x), expected)
    assert not np.array_equal(np.sin(x), expected)  # why tf_image.sinf exists
    assert weight.dtype == np.float32


def _clear_lanczos_caches() -> None:
    tf_image.lanczos3_spans.cache_clear()
    tf_image._trimmed_spans.cache_clear()


def test_resize_reproduces_tensorflows_rounding_ties():
    """588 output values that TF computes as exactly n + 0.5 (half to even): equal, numpy and numba."""
    tf = np.load(DATA / "tf_lanczos3.npz")
    img, coords = tf["tie_image"], tf["tie_coords"].astype(np.int64)
    floats = tf_image.tf_lanczos3_resize_float(img, 224)[coords[:, 0], coords[:, 1], coords[:, 2]]
    assert np.array_equal(floats, tf["tie_values"])
    assert np.all(floats - np.floor(floats) == np.float32(0.5))
    assert np.array_equal(tf_image.tf_lanczos3_resize_numpy(img, 224), tf["tie_tf"])
    assert np.array_equal(tf_image.tf_lanczos3_resize(img, 224), tf["tie_tf"])


def test_rounding_ties_catch_weights_off_by_one_ulp(monkeypatch):
    """The tie image fails weights computed with numpy's float32 sin (the previous implementation)."""
    tf = np.load(DATA / "tf_lanczos3.npz")
    monkeypatch.setattr(tf_image, "sinf", lambda x: np.sin(np.asarray(x, dtype=np.float32)))
    _clear_lanczos_caches()
    try:
        wrong = tf_image.tf_lanczos3_resize_numpy(tf["tie_image"], 224)
    finally:
        monkeypatch.undo()
        _clear_lanczos_caches()
    assert (wrong != tf["tie_tf"]).sum() > 0


def _numpy_reference_image(upright, size, crop, jpeg=True):
    img = images.reference_orientation(upright)
    if jpeg:
        img = tf_image.jpeg_roundtrip(img)
    img = tf_image.tf_lanczos3_resize_numpy(img, size)
    return tf_image.tf_center_crop_resize_numpy(img) if crop else img


@pytest.mark.parametrize("size", [256, 224])
def test_numba_image_path_is_bit_identical_to_numpy(size):
    """The numba resize + crop kernels reproduce the numpy float32 reference exactly."""
    rng = np.random.default_rng(size)
    frames = [make_frame(size)[::-1], rng.integers(0, 256, (size, size, 3), dtype=np.uint8)]
    frames.append(np.clip(rng.normal(128, 70, (size, size, 3)), 0, 255).astype(np.uint8))
    blocks = rng.integers(0, 2, (size // 8, size // 8, 3)).astype(np.uint8) * 255  # clips at 0 / 255
    frames.append(blocks.repeat(8, 0).repeat(8, 1))
    for frame in frames:
        for crop in (False, True):
            for jpeg in (True, False):
                expected = _numpy_reference_image(frame, 224, crop, jpeg)
                ours = images.reference_image(frame, 224, center_crop=crop, jpeg=jpeg)
                assert np.array_equal(ours, expected)
        resized = tf_image.tf_lanczos3_resize_numpy(frame, 224)
        assert np.array_equal(tf_image.tf_lanczos3_resize(frame, 224), resized)
        cropped = tf_image.tf_center_crop_resize_numpy(resized)
        assert np.array_equal(tf_image.tf_center_crop_resize(resized), cropped)
        smaller = tf_image.tf_lanczos3_resize_numpy(frame, 160)
        assert np.array_equal(tf_image.tf_lanczos3_resize(frame, 160), smaller)


def test_pixel_lookup_table_is_bit_identical_to_numpy(tiny_dirs):
    pixels = PixelTransform.from_dir(tiny_dirs["openvla"], n_towers=2)
    img = _every_value_image()
    assert torch.equal(pixels(img), pixels._call_numpy(img))


def _torchvision_reference_pixels(checkpoint: Path, img: np.ndarray) -> torch.Tensor:
    """PrismaticImageProcessor.apply_transform for a 224 image: to_tensor + normalize per tower,
    with torchvision's own ops and the stored tvf_normalize_params."""
    import torchvision.transforms.functional as tvf
    from PIL import Image

    cfg = json.loads((checkpoint / "preprocessor_config.json").read_text())
    tensor = tvf.to_tensor(Image.fromarray(img))
    return torch.vstack([tvf.normalize(tensor, **params) for params in cfg["tvf_normalize_params"]])


def _every_value_image() -> np.ndarray:
    img = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    img.reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]  # every value in every channel
    return img


def test_pixels_are_torchvisions_normalize_with_tvf_normalize_params(tiny_dirs):
    """As the release's processor: tvf_normalize_params (bf16-rounded DINOv2 stats), not means/stds."""
    d = tiny_dirs["openvla"]
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    assert cfg["means"][0] == [0.485, 0.456, 0.406] and cfg["stds"][0] == [0.229, 0.224, 0.225]
    assert cfg["tvf_normalize_params"][0]["mean"] == [0.484375, 0.455078125, 0.40625]
    assert cfg["tvf_normalize_params"][0]["std"] == [0.228515625, 0.2236328125, 0.224609375]
    img = _every_value_image()
    expected = _torchvision_reference_pixels(d, img)
    pixels = PixelTransform.from_dir(d, n_towers=2)
    assert torch.equal(pixels(img), expected)
    assert torch.equal(pixels._call_numpy(img), expected)
    unrounded = PixelTransform(sizes=pixels.sizes, means=cfg["means"], stds=cfg["stds"])
    assert (unrounded(img)[:3] - expected[:3]).abs().max() > 1e-3  # the test tells the fields apart


def test_preprocessor_without_tvf_normalize_params_falls_back_with_a_warning(tiny_copy, caplog):
    d = tiny_copy("openvla")
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    del cfg["tvf_normalize_params"]
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    with caplog.at_level("WARNING"):
        pixels = PixelTransform.from_dir(d, n_towers=2)
    assert "tvf_normalize_params" in caplog.text and "means/stds" in caplog.text
    assert pixels.means == cfg["means"] and pixels.stds == cfg["stds"]


@pytest.mark.parametrize(
    "params",
    [
        [{"mean": [0.5] * 3, "std": [0.5] * 3}],  # one tower for a fused (two-tower) model
        [{"mean": [0.5] * 3}] * 2,  # no std
        [{"mean": [0.5] * 3, "std": [0.0] * 3}] * 2,  # division by zero
    ],
)
def test_malformed_tvf_normalize_params_are_refused(tiny_copy, params):
    d = tiny_copy("openvla")
    cfg = json.loads((d / "preprocessor_config.json").read_text())
    cfg["tvf_normalize_params"] = params
    (d / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="tvf_normalize_params"):
        PixelTransform.from_dir(d, n_towers=2)


def test_pixel_values_are_the_hand_computed_normalisation(tiny_dirs):
    pixels = PixelTransform.from_dir(tiny_dirs["openvla"], n_towers=2)
    img = np.zeros((224, 224, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 128, 250
    out = pixels(img)
    assert out.shape == (6, 224, 224) and out.dtype == torch.float32
    # DINOv2 tower: ImageNet stats as stored by the release (rounded through bfloat16).
    dino_mean, dino_std = [0.484375, 0.455078125, 0.40625], [0.228515625, 0.2236328125, 0.224609375]
    for c, v in enumerate((10, 128, 250)):
        assert out[c, 0, 0].item() == pytest.approx((v / 255 - dino_mean[c]) / dino_std[c], abs=1e-6)
        assert out[3 + c, 5, 7].item() == pytest.approx((v / 255 - 0.5) / 0.5, abs=1e-6)


def test_policy_preprocess_feeds_reference_pixels_and_prompt(policy, tiny_dirs):
    obs = observation()
    inputs = policy.preprocess([obs])
    ids = inputs.input_ids
    assert inputs.attention_mask.tolist() == [[1] * ids.shape[1]]
    expected_img = images.reference_image(obs["images"]["agentview"], 224, center_crop=True)
    assert torch.equal(inputs.pixel_values[0], policy.pixels(expected_img))
    # Hand-tokenised prompt: the tiny BPE has no merges, so every character is one piece;
    # spaces become the empty piece, "\n" falls back to byte <0x0A>, <s> first, empty piece last.
    vocab = json.loads((tiny_dirs["openvla"] / "tokenizer.json").read_text())["model"]["vocab"]
    text = "\u2581" + f"In: What action should the robot take to {obs['instruction'].lower()}?\nOut:".replace(
        " ", "\u2581"
    )
    expected = [1] + [vocab["<0x0A>"] if ch == "\n" else vocab[ch] for ch in text] + [vocab["\u2581"]]
    assert ids[0].tolist() == expected


# ---------------------------------------------------------------- decoding


def test_token_to_action_decoding_against_hand_computed_values(policy):
    vocab = TINY_VOCAB  # text vocab (1088) - pad_to_multiple_of (64)
    tokens = np.array([vocab - 1, vocab - 256, vocab - 128, 5, vocab - 200, vocab - 2, vocab - 100])
    # bin index = clip(vocab - t - 1, 0, 254); center_i = -1 + (2 i + 1) / 255
    idx = [0, 254, 127, 254, 199, 1, 99]  # token 5 is not an action token: clipped to bin 254
    normalized = np.array([-1 + (2 * i + 1) / 255 for i in idx])
    q01, q99, mask = (np.array(ACTION_STATS[k], dtype=float) for k in ("q01", "q99", "mask"))
    expected = np.where(mask, 0.5 * (normalized + 1) * (q99 - q01) + q01, normalized)
    # LIBERO gripper: [0,1] -> [-1,1], sign, invert
    expected[-1] = -np.sign(2 * expected[-1] - 1)
    got = policy.decode(tokens)
    assert got.shape == (1, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-6)


def test_gripper_post_processing_conventions():
    a = np.array([[0, 0, 0, 0, 0, 0, 0.9], [0, 0, 0, 0, 0, 0, 0.1], [0, 0, 0, 0, 0, 0, 0.5]])
    out = decoding.libero_gripper(a)
    assert out[:, -1].tolist() == [-1.0, 1.0, -0.0]  # 0.9 (open in RLDS) -> -1 open in the env


def test_unnorm_key_missing_or_ambiguous_lists_available_keys():
    stats = {"bridge_orig": {"action": ACTION_STATS}, "libero_spatial_no_noops": {"action": ACTION_STATS}}
    with pytest.raises(UnnormKeyError, match=r"bridge_orig.*libero_spatial_no_noops"):
        decoding.resolve_unnorm_key(stats, None)
    with pytest.raises(UnnormKeyError, match="libero_spatial'.*choose one of.*bridge_orig"):
        decoding.resolve_unnorm_key(stats, "libero_spatial")
    assert decoding.resolve_unnorm_key(stats, "bridge_orig") == "bridge_orig"


def test_act_returns_one_action_from_greedy_tokens(policy):
    obs = observation()
    result = policy.act([obs])
    assert isinstance(result, ActionChunk) and result.actions.shape == (1, 1, 7)
    action = result.actions[0]
    assert action.dtype == np.float32 and np.all(np.isfinite(action))
    assert action[0, -1] in (-1.0, 0.0, 1.0)
    inputs = policy.preprocess([obs])
    eos = policy.tokenizer.eos_id
    generated = policy.model.generate_greedy(inputs.input_ids, inputs.pixel_values, 7, eos)
    np.testing.assert_array_equal(action, policy.decode(generated[0, -7:].numpy()))
    timing = result.info["timing_ms"]
    assert set(timing) == {"preprocess", "model", "postprocess"} and all(v >= 0 for v in timing.values())
    assert not hasattr(policy, "last_timing")  # no side channels


def test_act_takes_a_list_and_validates_env_ids(policy):
    obs = observation()
    with pytest.raises(TypeError, match="act_one"):
        policy.act(obs)
    with pytest.raises(ValueError, match="env_ids"):
        policy.act([obs, obs], env_ids=[0])
    np.testing.assert_array_equal(policy.act([obs], env_ids=[5]).actions[0], act_one(policy, obs))
    policy.reset()
    policy.reset(env_ids=[1, 3], seeds=[0, None])  # stateless: nothing to forget


def _batched_vs_single_greedy(pol: OpenVLAPolicy, batch: list[dict]):
    """(batched ids, batched logits, [(single ids, single logits)]) of greedy decoding."""
    inputs = pol.preprocess(batch)
    lengths = {int(n) for n in inputs.attention_mask.sum(dim=1)}
    assert len(lengths) == len(batch)  # prompts of different lengths
    ids, logits = pol.model.generate_greedy_with_logits(
        inputs.input_ids, inputs.pixel_values, 7, pol.tokenizer.eos_id, inputs.attention_mask
    )
    singles = []
    for obs in batch:
        one = pol.preprocess([obs])
        eos = pol.tokenizer.eos_id
        singles.append(pol.model.generate_greedy_with_logits(one.input_ids, one.pixel_values, 7, eos))
    return inputs.input_ids.shape[1], ids, logits, singles


@pytest.mark.parametrize("dtype,logit_atol", [("fp32", 1e-5), ("bf16", 1e-2)])
def test_batched_act_equals_single_calls_with_different_prompts(policy, policy_fp32, dtype, logit_atol):
    """Row b of a B = 3 batch (different images and instructions of different token lengths,
    left-padded) decodes the same 7 tokens, hence exactly the same action, as a B = 1 call.

    The per-step logits are not bit-identical: batched matmuls round differently from B = 1's
    matrix-vector products. Measured on the tiny checkpoint: max |d logit| 3.6e-7 in fp32 and
    0.0039 (one bf16 ulp; logits ~1.2) in bf16; the tolerances are 1e-5 and 1e-2.
    """
    pol = policy_fp32 if dtype == "fp32" else policy
    batch = observation_batch(3)
    result = pol.act(batch, env_ids=[4, 0, 7])
    assert result.actions.shape == (3, 1, 7)
    singles = np.stack([act_one(pol, obs) for obs in batch])
    np.testing.assert_array_equal(result.actions, singles)
    width, ids, logits, one = _batched_vs_single_greedy(pol, batch)
    for b, (ids1, logits1) in enumerate(one):
        np.testing.assert_array_equal(ids[b, width:].numpy(), ids1[0, ids1.shape[1] - 7 :].numpy())
        np.testing.assert_allclose(logits[b].numpy(), logits1[0].numpy(), rtol=0, atol=logit_atol)


def test_batched_decoding_stops_each_row_at_its_own_eos(policy_fp32, monkeypatch):
    """A row that emits EOS keeps EOS afterwards; the others go on; the action takes prompt ids
    as the reference does (last action_dim ids of prompt + generated)."""
    from vla_gym.policies.openvla.modeling import generated_lengths

    pol = policy_fp32
    batch = observation_batch(2)
    width, ids, _, _ = _batched_vs_single_greedy(pol, batch)
    first = int(ids[0, width])  # row 0's first generated id plays EOS
    monkeypatch.setattr(pol.tokenizer, "eos_id", first)
    width, ids, _, one = _batched_vs_single_greedy(pol, batch)
    lengths = generated_lengths(ids, width, first)
    assert lengths[0] == 1 and bool((ids[0, width:] == first).all())
    for b, (ids1, _) in enumerate(one):
        assert lengths[b] == ids1.shape[1] - pol.preprocess([batch[b]]).input_ids.shape[1]
    np.testing.assert_array_equal(pol.act(batch).actions, np.stack([act_one(pol, o) for o in batch]))


def test_cached_greedy_decoding_equals_full_recompute(policy):
    """The KV-cache loop must pick the same tokens as argmax over all logits of a full forward."""
    inputs = policy.preprocess([observation(seed=3)])
    ids, pixel_values = inputs.input_ids, inputs.pixel_values
    model = policy.model
    cached = model.generate_greedy(ids, pixel_values, 7, eos_token_id=None)
    seq = ids
    with torch.no_grad():
        for _ in range(7):
            logits = model.language_model(inputs_embeds=model.multimodal_embeddings(seq, pixel_values)).logits
            seq = torch.cat([seq, logits[:, -1].float().argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, seq)


def test_decode_with_logits_exposes_each_greedy_step(policy):
    obs = observation(seed=1)
    out = policy.decode_with_logits(obs)
    vocab = policy.cfg.text_config["vocab_size"]  # padded: argmax runs over all of it
    assert out.logits.shape == (7, vocab) and out.logits.dtype == np.float32
    assert out.token_ids.shape == (7,)
    np.testing.assert_array_equal(out.logits.argmax(axis=1), out.token_ids)
    np.testing.assert_array_equal(out.action, act_one(policy, obs))
    # Step 0's logits are those of a plain forward pass over the prompt.
    inputs = policy.preprocess([obs])
    with torch.no_grad():
        embeds = policy.model.multimodal_embeddings(inputs.input_ids, inputs.pixel_values)
        first = policy.model.language_model(inputs_embeds=embeds).logits[0, -1].float().numpy()
    np.testing.assert_array_equal(out.logits[0], first)


def test_policy_declares_reference_inputs_and_info(policy):
    assert policy.inputs.cameras == ("agentview",)
    assert policy.inputs.image_size == 256 and policy.inputs.uses_state is False
    assert policy.execution == ChunkExecution(mode="open_loop", replan_steps=1)
    assert policy.reference_scene_seed == 0 and policy.loads_weights
    assert policy.quantization_skip == ("lm_head",)
    info = policy.info()
    assert info.name == "openvla" and info.chunk_size == 1 and info.quantization == "none"
    assert info.weight_bytes > 0 and "bfloat16" in info.dtype and info.device == "cpu"


# ---------------------------------------------------------------- broken checkpoints


def test_missing_shard_is_a_clear_error(tiny_copy):
    d = tiny_copy("openvla")
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors is missing"):
        OpenVLAPolicy.from_pretrained(d, device="cpu")


def test_truncated_shard_is_a_clear_error(tiny_copy):
    d = tiny_copy("openvla")
    shard = d / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        OpenVLAPolicy.from_pretrained(d, device="cpu")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "preprocessor_config.json"])
def test_missing_or_corrupted_json_files_are_named(tiny_copy, name):
    d = tiny_copy("openvla")
    (d / name).write_text("{ not json")
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        OpenVLAPolicy.from_pretrained(d, device="cpu")
    (d / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        OpenVLAPolicy.from_pretrained(d, device="cpu")


def test_openvla_policy_refuses_an_oft_checkpoint(tiny_dirs):
    match = r"OpenVLA-OFT checkpoint.*action_head--150000.*policy=openvla_oft"
    with pytest.raises(CheckpointError, match=match):
        OpenVLAPolicy.from_pretrained(tiny_dirs["openvla-oft"], device="cpu")


def test_config_that_disagrees_with_weights_is_refused(tiny_copy):
    d = tiny_copy("openvla")
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"]["num_hidden_layers"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing"):
        OpenVLAPolicy.from_pretrained(d, device="cpu")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_prismatic_checkpoint_with_python_objects_is_not_unpickled(tiny_copy, tiny_dirs):
    d = tiny_copy("openvla-prismatic")
    with open(d / "checkpoints" / "latest-checkpoint.pt", "wb") as f:
        pickle.dump({"model": {"projector": {}}, "evil": Path("/")}, f)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_openvla_model(d, base_checkpoint=tiny_dirs["openvla"])


# ---------------------------------------------------------------- Hydra config


def test_hydra_config_instantiates_the_policy(tiny_dirs):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[2] / "conf"
    cfg = OmegaConf.load(conf / "policy" / "openvla.yaml")
    cfg.checkpoint = str(tiny_dirs["openvla"])
    cfg.device = "cpu"
    for key in ("replan_steps", "chunk_mode", "scene_seed"):  # runner overrides, if a config sets them
        cfg.pop(key, None)
    quant = OmegaConf.load(conf / "quantization" / "none.yaml")
    pol = instantiate(cfg, quantization=quant)
    assert isinstance(pol, OpenVLAPolicy) and pol.info().quantization == "none"


# ---------------------------------------------------------------- a real LIBERO env


def test_short_rollout_in_libero(policy):
    gym = pytest.importorskip("gymnasium")
    pytest.importorskip("vla_gym.envs.libero")
    from vla_gym.policy import as_chunk

    env = gym.make(
        "vla_gym/libero_spatial", task=0, cameras=policy.inputs.cameras, image_size=policy.inputs.image_size
    )
    try:
        obs, _ = env.reset(seed=0)
        assert obs["images"]["agentview"].shape == (256, 256, 3)
        policy.reset()
        for _ in range(3):
            chunk = as_chunk(act_one(policy, obs), action_dim=7)
            assert chunk.shape == (1, 7)
            obs, reward, terminated, truncated, info = env.step(chunk[0])
            assert np.isfinite(reward)
    finally:
        env.close()


def test_fast_path_renders_at_224_and_skips_the_resize(tiny_dirs):
    pol = OpenVLAPolicy.from_pretrained(tiny_dirs["openvla"], device="cpu", image_size=224, center_crop=False)
    assert pol.inputs.image_size == 224
    frame = make_frame(224)[::-1].copy()
    expected = tf_image.jpeg_roundtrip(images.reference_orientation(frame))  # lanczos 224->224 is the identity
    assert np.array_equal(images.reference_image(frame, 224, center_crop=False), expected)
    assert act_one(pol, {"images": {"agentview": frame}, "instruction": "open the drawer"}).shape == (1, 7)


def test_light_imports_do_not_pull_in_torch():
    import subprocess
    import sys

    code = (
        "import sys, vla_gym, vla_gym.policies, vla_gym.envs, vla_gym.quantization; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
