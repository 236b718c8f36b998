"""pi0 / pi0.5 network against LeRobot 0.6.1's own PI0Pytorch / PI05Pytorch, plus its invariants.

Two references, each run by its own code on a tiny random model (the scripts only swap in tiny
sizes), with fixed inputs and noise, saved with ``safetensors.torch.save_model`` (the reference's
on-disk layout) together with its float32 and bfloat16 outputs:

- ``data/pi0_ref_*``: LeRobot 0.6.1 ``PI0Pytorch`` / ``PI05Pytorch.sample_actions`` (stock
  transformers 5.5.4 + its ``pi_gemma.py``), made by ``data/pi0_make_reference_fixture.py``.
- ``data/pi0_openpi_*``: openpi ``PI0Pytorch.sample_actions`` (transformers 4.53.2 with openpi's
  ``transformers_replace``, in a throwaway venv), made by ``data/pi0_make_openpi_fixture.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from vla_gym.policies.pi0 import modeling
from vla_gym.policies.pi0.modeling import (
    EMBED_KEY,
    EXPERT_LM_HEAD_KEY,
    LEROBOT_FP32_KEEP,
    LM_HEAD_KEY,
    OPENPI_FP32_KEEP,
    SO400M,
    VARIANTS,
    Pi0Dims,
    Pi0Model,
    canonical_state_dict,
    check_variant,
    dims_from_state_dict,
    tiny_dims,
)
from vla_gym.policies.toolkit.errors import CheckpointError

from vla_gym.policy import StageTimer

DATA = Path(__file__).parent / "data"
VARIANT_IDS = ["pi0", "pi05"]
# fp32: ours and the references run the same ops in a different order/kernels (e.g. LeRobot's
# SigLIP is transformers' SDPA); measured max abs difference 3.6e-7 .. 7.2e-7 on actions of
# magnitude 3.6 .. 5.3 after 10 Euler steps (each reference's own t schedule). 1e-5 leaves >= 14x
# margin, while a real deviation moves actions by >= 4e-3 (tried: RoPE theta 9000, max_period
# 3.9, RMS eps 1e-3, no pi0 state/action ar-block) and even the other t schedule by 1.4e-5 .. 3.9e-5.
FP32_ATOL = 1e-5
# bf16 (each reference's precision policy): both sides round to bf16 at slightly different points
# (kernels, transformers' bf16-rounded sqrt(width) embedding scale in LeRobot); measured 3.7e-3 ..
# 8.8e-3 between ours and the reference's bf16 run, below the reference's own bf16-vs-fp32 gap
# (5.4e-3 .. 1.35e-2). 3e-2 is < 1 % of max |action|: this checks the bf16 path is sound, it
# cannot resolve individual cast points.
BF16_ATOL = 3e-2


SOURCES = {"lerobot": "pi0_ref", "openpi": "pi0_openpi"}  # fixture file stem per reference
PRECISION = {"lerobot": LEROBOT_FP32_KEEP, "openpi": OPENPI_FP32_KEEP}  # each reference's bf16 policy
CASES = [(src, name) for src in SOURCES for name in VARIANT_IDS]


def _reference(name: str, source: str = "lerobot") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    stem = SOURCES[source]
    return load_file(DATA / f"{stem}_{name}.safetensors"), load_file(DATA / f"{stem}_{name}_io.safetensors")


def _inputs(io: dict[str, torch.Tensor]) -> tuple:
    images = [io[f"image_{k}"] for k in range(3)]
    masks = [io[f"image_mask_{k}"] for k in range(3)]
    return images, masks, io["tokens"], io["token_masks"], io["state"]


@pytest.fixture(scope="module", params=CASES, ids=[f"{s}-{n}" for s, n in CASES])
def reference(request) -> tuple[str, str, Pi0Model, dict[str, torch.Tensor]]:
    source, name = request.param
    state, io = _reference(name, source)
    dims = dims_from_state_dict(state, pi05=name == "pi05", action_horizon=io["noise"].shape[1])
    model = Pi0Model(dims).eval()
    # The test's own key fix: drop the expert's unused lm_head; the tied pair from embed_tokens
    # when the file has it (LeRobot/transformers 5 saves both, untied), else from lm_head (openpi).
    fixed = {k: v for k, v in state.items() if k != EXPERT_LM_HEAD_KEY}
    fixed[LM_HEAD_KEY] = fixed[EMBED_KEY] = fixed.get(EMBED_KEY, fixed[LM_HEAD_KEY])
    model.load_state_dict(fixed, strict=True)
    return source, name, model, io


def test_reference_fp32(reference):
    source, name, model, io = reference
    out = model.sample_actions(*_inputs(io), noise=io["noise"], num_steps=10, time_schedule=source)
    expected = io["actions_fp32"]
    assert out.dtype == torch.float32 and out.shape == expected.shape
    assert expected.abs().max() > 1.0  # a non-trivial reference
    err = (out - expected).abs().max().item()
    assert err < FP32_ATOL, f"{source} {name}: max |ours - reference| = {err}"


def test_reference_bf16(reference):
    source, name, fp32_model, io = reference
    model = Pi0Model(fp32_model.dims).eval()
    model.load_state_dict(fp32_model.state_dict())
    model.set_precision(torch.bfloat16, keep_fp32=PRECISION[source], round_kept=source == "openpi")
    out = model.sample_actions(*_inputs(io), noise=io["noise"], time_schedule=source)
    assert torch.isfinite(out).all()
    err = (out - io["actions_bf16"]).abs().max().item()
    assert err < BF16_ATOL, f"{source} {name}: bf16 max |ours - reference bf16| = {err}"


@pytest.mark.parametrize(("source", "name"), CASES)
def test_state_dict_keys_match_reference_module(source, name):
    """Our keys = the reference module's, minus the unused expert lm_head (STATE_DICT_NOTES)."""
    ref = json.loads((DATA / f"{SOURCES[source]}_keys.json").read_text())[name]
    state, io = _reference(name, source)
    dims = dims_from_state_dict(state, pi05=name == "pi05", action_horizon=io["noise"].shape[1])
    ours = set(Pi0Model(dims).state_dict())
    assert ours == set(ref["module_state_dict"]) - {EXPERT_LM_HEAD_KEY}
    assert EXPERT_LM_HEAD_KEY in ref["file"]
    assert set(canonical_state_dict(state)) == ours


def test_canonical_state_dict_ties_from_either_name():
    state, _ = _reference("pi0")
    only_head = {k: v for k, v in state.items() if k != EMBED_KEY}  # openpi / released LeRobot files
    fixed = canonical_state_dict(only_head)
    assert fixed[EMBED_KEY] is state[LM_HEAD_KEY] and EXPERT_LM_HEAD_KEY not in fixed
    both = canonical_state_dict(state)  # embed_tokens is what the network reads: it wins
    assert both[LM_HEAD_KEY] is state[EMBED_KEY]
    with pytest.raises(CheckpointError, match="neither"):
        canonical_state_dict({k: v for k, v in only_head.items() if k != LM_HEAD_KEY})


def test_tied_head_shares_the_embedding(reference):
    _, _, model, _ = reference
    pali = model.paligemma_with_expert.paligemma
    assert pali.lm_head.weight is pali.model.language_model.embed_tokens.weight
    model.set_precision(torch.float32)
    assert pali.lm_head.weight is pali.model.language_model.embed_tokens.weight


def _meta_state(dims: Pi0Dims) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return dict(Pi0Model(dims).state_dict())


@pytest.mark.parametrize("pi05", [False, True])
def test_real_sizes_read_back_from_shapes(pi05):
    """Real pi0/pi0.5 sizes (built on the meta device: shapes only) are recovered from tensor shapes."""
    real = Pi0Dims(SO400M, VARIANTS["gemma_2b"], VARIANTS["gemma_300m"], 257_152, 32, 50, pi05)
    dims = dims_from_state_dict(_meta_state(real), pi05=pi05, action_horizon=50)
    assert dims == real
    assert check_variant(dims.paligemma, "gemma_2b") is None
    assert check_variant(dims.expert, "gemma_300m") is None
    assert check_variant(dims.expert, "gemma_300m_lora") is None  # openpi LoRA configs name these
    warning = check_variant(dims.expert, "gemma_2b")
    assert warning is not None and "width 1024 (variant 2048)" in warning
    assert "unknown" in check_variant(dims.expert, "gemma_7b")


def test_inconsistent_shapes_raise_checkpoint_error():
    state, _ = _reference("pi05")
    with pytest.raises(CheckpointError, match="AdaRMS"):
        dims_from_state_dict(state, pi05=False, action_horizon=6)
    pi0_state, _ = _reference("pi0")
    with pytest.raises(CheckpointError, match="pi0 checkpoint loaded as pi0.5"):
        dims_from_state_dict(pi0_state, pi05=True, action_horizon=6)
    key = modeling.EXPERT + "layers.1.mlp.up_proj.weight"
    bad = dict(pi0_state, **{key: torch.zeros(5, 16)})
    with pytest.raises(CheckpointError, match="up_proj"):
        dims_from_state_dict(bad, pi05=False, action_horizon=6)
    gap = {k: v for k, v in pi0_state.items() if ".layers.0." not in k or "vision" in k}
    with pytest.raises(CheckpointError, match="layers"):
        dims_from_state_dict(gap, pi05=False, action_horizon=6)
    renamed = {k.replace("action_time_mlp", "time_mlp"): v for k, v in pi0_state.items()}
    with pytest.raises(CheckpointError, match="time_mlp"):
        dims_from_state_dict(renamed, pi05=False, action_horizon=6)


def _random_model(pi05: bool, seed: int = 0) -> Pi0Model:
    torch.manual_seed(seed)
    model = Pi0Model(tiny_dims(pi05, action_horizon=4, image_size=32, patch_size=8)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def _random_inputs(model: Pi0Model, b: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    d = model.dims
    size = d.vision.image_size
    tokens = torch.randint(1, d.vocab_size, (b, 5), generator=gen)
    token_masks = torch.ones(b, 5, dtype=torch.bool)
    token_masks[1:, 3:] = False
    return dict(
        images=[torch.rand(b, 3, size, size, generator=gen) * 2 - 1 for _ in range(3)],
        image_masks=[torch.ones(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)],
        tokens=tokens,
        token_masks=token_masks,
        state=torch.randn(b, d.action_dim, generator=gen),
        noise=torch.randn(b, d.action_horizon, d.action_dim, generator=gen),
    )


@pytest.mark.parametrize("pi05", [False, True])
def test_fixed_noise_is_deterministic_and_noise_matters(pi05):
    model = _random_model(pi05)
    x = _random_inputs(model, 2)
    a, b = model.sample_actions(**x), model.sample_actions(**x)
    assert torch.equal(a, b)
    c = model.sample_actions(**dict(x, noise=x["noise"].flip(0)))
    assert (c - a).abs().max() > 1e-3


@pytest.mark.parametrize("pi05", [False, True])
def test_batch_rows_equal_single_calls(pi05):
    model = _random_model(pi05)
    x = _random_inputs(model, 3)
    batch = model.sample_actions(**x)
    for i in range(3):
        one = {k: ([t[i : i + 1] for t in v] if isinstance(v, list) else v[i : i + 1]) for k, v in x.items()}
        if i > 0:  # rows 1.. are padded in the batch; alone they need not be padded
            one["tokens"], one["token_masks"] = one["tokens"][:, :3], one["token_masks"][:, :3]
        single = model.sample_actions(**one)
        assert (single[0] - batch[i]).abs().max() < 1e-5


@pytest.mark.parametrize("pi05", [False, True])
def test_masked_inputs_have_no_effect_and_state_only_for_pi0(pi05):
    model = _random_model(pi05)
    x = _random_inputs(model, 2)
    x["image_masks"][1] = torch.tensor([True, False])  # row 1 lacks camera 1 (the slot is still encoded)
    base = model.sample_actions(**x)
    images = [im.clone() for im in x["images"]]
    images[2] = torch.rand_like(images[2])  # the camera slot masked in all rows
    images[1][1] = torch.rand_like(images[1][1])  # row 1's masked camera 1
    tokens = x["tokens"].clone()
    tokens[1, 3:] = 7  # padded token positions of row 1
    same = model.sample_actions(**dict(x, images=images, tokens=tokens))
    assert torch.allclose(same, base, atol=1e-6)
    unmasked = model.sample_actions(**dict(x, images=images, image_masks=[torch.ones(2, dtype=torch.bool)] * 3))
    assert (unmasked - base).abs().max() > 1e-3
    other_state = model.sample_actions(**dict(x, state=x["state"] + 1.0))
    if pi05:
        assert torch.equal(other_state, base)
    else:
        assert (other_state - base).abs().max() > 1e-3


@pytest.mark.parametrize("pi05", [False, True])
def test_prefix_runs_once_and_expert_once_per_step(pi05):
    model = _random_model(pi05)
    calls = {"vision": 0, "prefix": 0, "expert": 0}

    def counter(key):
        def hook(*_):
            calls[key] += 1

        return hook

    inner = model.paligemma_with_expert.paligemma.model
    inner.vision_tower.register_forward_pre_hook(counter("vision"))
    inner.language_model.layers[0].self_attn.q_proj.register_forward_pre_hook(counter("prefix"))
    model.paligemma_with_expert.gemma_expert.model.layers[0].self_attn.q_proj.register_forward_pre_hook(
        counter("expert")
    )
    timer = StageTimer()
    model.sample_actions(**_random_inputs(model, 2), num_steps=7, timer=timer)
    assert calls == {"vision": 2, "prefix": 1, "expert": 7}  # the slot masked in all rows is not encoded
    assert set(timer.ms) == {"vision", "prefix", "denoise"}


@pytest.mark.parametrize("pi05", [False, True])
def test_bf16_precision_policy(pi05):
    model = _random_model(pi05)
    x = _random_inputs(model, 2)
    ref = model.sample_actions(**x)
    model.set_precision(torch.bfloat16)  # openpi's list
    names = dict(model.named_parameters())
    fp32 = {n for n, p in names.items() if p.dtype == torch.float32}
    inner = "paligemma_with_expert."
    kept = {n for n in names if n.startswith(inner) and any(s in n[len(inner) :] for s in OPENPI_FP32_KEEP)}
    assert fp32 == kept | {n for n in names if not n.startswith(inner)}  # + the top-level projections
    assert any("dense" in n for n in fp32) == pi05
    assert names[modeling.VISION + "encoder.layers.0.mlp.fc1.weight"].dtype == torch.bfloat16
    norm = modeling.LANGUAGE + "layers.0.input_layernorm.weight"
    original = _random_model(pi05).state_dict()[norm]  # same seed: the fp32 values before the cast
    assert torch.equal(names[norm], original.to(torch.bfloat16).float())  # openpi: rounded, kept fp32
    lerobot = _random_model(pi05)
    lerobot.set_precision(torch.bfloat16, keep_fp32=LEROBOT_FP32_KEEP, round_kept=False)
    assert torch.equal(lerobot.state_dict()[norm], original)  # LeRobot: the file's fp32 values
    assert lerobot.state_dict()[modeling.VISION + "encoder.layers.0.mlp.fc1.weight"].dtype == torch.float32
    out = model.sample_actions(**x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


def test_siglip_matches_stock_transformers():
    """Our SigLIP tower vs transformers' SiglipVisionModel (the installed version) on the same weights."""
    transformers = pytest.importorskip("transformers")
    model = _random_model(False)
    tower = model.paligemma_with_expert.paligemma.model.vision_tower
    v = model.dims.vision
    config = transformers.SiglipVisionConfig(
        hidden_size=v.width, num_hidden_layers=v.depth, intermediate_size=v.mlp_dim,
        num_attention_heads=v.num_heads, patch_size=v.patch_size, image_size=v.image_size,
        vision_use_head=False, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
    )
    stock = transformers.SiglipVisionModel(config).eval()
    # transformers 5.24 dropped the ``vision_model.`` level that PaliGemma checkpoints (and 5.5) have.
    ours = tower.state_dict() if "vision_model" in next(iter(stock.state_dict())) else tower.vision_model.state_dict()
    missing, unexpected = stock.load_state_dict(ours, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    pixels = torch.rand(2, 3, v.image_size, v.image_size) * 2 - 1
    with torch.no_grad():
        expected = stock(pixel_values=pixels).last_hidden_state
        assert (tower(pixels) - expected).abs().max() < 1e-5


def test_rejects_bad_shapes():
    model = _random_model(False)
    x = _random_inputs(model, 2)
    with pytest.raises(ValueError, match="noise"):
        model.sample_actions(**dict(x, noise=x["noise"][:, :2]))
    with pytest.raises(ValueError, match="state"):
        model.sample_actions(**dict(x, state=x["state"][:, :8]))
    with pytest.raises(ValueError, match="images must be"):
        model.sample_actions(**dict(x, images=[torch.zeros(2, 3, 16, 16)] * 3))


@pytest.mark.parametrize("name", ["fp16", "int8"])
def test_runs_under_quantization_settings(name):
    """Plain fp16 cast (the additive mask stays fp32: fp16 -2.38e38 = -inf would NaN padded rows) and int8."""
    from vla_gym.quantization import apply_quantization

    model = _random_model(True)
    x = _random_inputs(model, 2)
    ref = model.sample_actions(**x)
    node = {"name": name, "dtype": "bf16"} if name == "int8" else name
    if name == "int8":
        pytest.importorskip("optimum.quanto")
    apply_quantization(model, node, "cpu", skip_modules=("lm_head",))
    out = model.sample_actions(**x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_skipping_an_all_masked_slot_is_exact(reference, dtype, monkeypatch):
    """Zeros for a slot masked in every row == encoding its image as the references do (bitwise)."""
    _, _, fp32_model, io = reference
    assert not io["image_mask_2"].any()  # the fixtures' missing right-wrist slot
    model = Pi0Model(fp32_model.dims).eval()
    model.load_state_dict(fp32_model.state_dict())
    model.set_precision(dtype)
    skipped = model.sample_actions(*_inputs(io), noise=io["noise"])
    monkeypatch.setattr(model, "_blank_image_tokens", model.embed_images)
    encoded = model.sample_actions(*_inputs(io), noise=io["noise"])
    assert torch.equal(skipped, encoded)
