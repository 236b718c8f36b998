"""pi0 / pi0.5 network (PaliGemma prefix + Gemma action expert, flow matching), sized from the checkpoint.

The module tree (and so ``state_dict()``) uses exactly openpi's ``PI0Pytorch`` names (LeRobot's
are the same with a ``model.`` prefix), see :data:`STATE_DICT_NOTES`. Sampling follows openpi's
``PI0Pytorch.sample_actions`` / LeRobot's ``PI0Pytorch``/``PI05Pytorch``:

1. Prefix = for each camera slot the SigLIP patch tokens projected to the Gemma width (no
   scaling), then the language tokens' embeddings times ``sqrt(width)``; pad mask = image slot
   mask / token mask; bidirectional attention among valid tokens; positions ``cumsum(mask) - 1``.
   One PaliGemma pass builds the per-layer KV cache (once per call).
2. Suffix per Euler step: pi0 = ``state_proj(state)`` token (ar-mask 1) + H action tokens
   ``action_time_mlp_out(swish(action_time_mlp_in([action_in_proj(x_t), time_emb])))``
   (ar-mask ``[1, 0, ...]``); pi0.5 = H tokens ``action_in_proj(x_t)`` with the expert's norms
   AdaRMS-conditioned on ``swish(time_mlp_out(swish(time_mlp_in(time_emb))))``. The suffix sees
   every valid prefix token and the ar-mask blocks; positions continue after the valid prefix.
3. ``v_t = action_out_proj(expert_out[:, -H:])``; ``x <- x + dt * v_t``, ``dt = -1/num_steps``,
   t from 1 towards 0 (openpi accumulates ``t += dt`` in float32, LeRobot forms ``1 + step*dt``:
   ``time_schedule``), starting from the caller's noise. With ``rtc=`` each step's velocity is
   the real-time-chunking guided one (:mod:`vla_gym.policies.pi0.rtc`, docs/rtc.md).

Time embedding: sin-cos over ``expert.width`` features, periods ``4e-3 .. 4.0`` geometric,
computed in float64 then cast to float32 (as both references on CPU/CUDA).

Fidelity (tests/policies/test_pi0_modeling.py): on tiny random models run by each reference's own
``sample_actions`` (openpi PI0Pytorch with its patched transformers 4.53.2; LeRobot 0.6.1 with
transformers 5.5.4), pi0 and pi0.5 actions agree to <= 7.2e-7 in float32 (magnitude ~4, 10 steps)
and to <= 8.8e-3 in bf16 under each reference's precision policy (:meth:`Pi0Model.set_precision`).
At the real token layout (768 image + 7 prompt tokens, head_dim 256, horizon 50;
tests/policies/data/pi0_medium_check.py, not a test: ~35 MB of fixtures) float32 agrees to
<= 9.5e-7, the computation's own fp32 rounding noise, and bf16 to <= 1.6e-2 (the references'
own bf16-vs-fp32 gap: 8e-3 .. 2.6e-2).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from vla_gym.policies.pi0.gemma import MASK_VALUE, GemmaStack, input_dtype
from vla_gym.policies.pi0.siglip import SiglipVisionTower
from vla_gym.policies.toolkit.errors import CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    from vla_gym.policies.pi0.rtc import RTCGuide
    from vla_gym.policy import StageTimer

TIME_SCHEDULES = ("openpi", "lerobot")
MIN_PERIOD = 4e-3
MAX_PERIOD = 4.0
GEMMA_HEADS = 8  # published head counts: openpi gemma.get_config (all variants), SigLIP So400m
GEMMA_KV_HEADS = 1
SIGLIP_HEADS = 16

PREFIX = "paligemma_with_expert."
VISION = PREFIX + "paligemma.model.vision_tower.vision_model."
PROJECTOR = PREFIX + "paligemma.model.multi_modal_projector.linear."
LANGUAGE = PREFIX + "paligemma.model.language_model."
EXPERT = PREFIX + "gemma_expert.model."
EMBED_KEY = LANGUAGE + "embed_tokens.weight"
LM_HEAD_KEY = PREFIX + "paligemma.lm_head.weight"
EXPERT_LM_HEAD_KEY = PREFIX + "gemma_expert.lm_head.weight"

STATE_DICT_NOTES = f"""\
Pi0Model.state_dict() keys = openpi PI0Pytorch.state_dict() keys, with two decisions:
- {LM_HEAD_KEY} is TIED to {EMBED_KEY} (one Parameter, both keys in state_dict()). The network
  reads only embed_tokens (no text is generated; lm_head is not an nn.Linear, never quantized).
  Files differ (verified by running both references' save_model, tests/policies/data/pi0_*_keys.json):
  openpi (transformers 4.53.2 + transformers_replace: tied; save_model keeps the sorted-first name)
  writes only lm_head.weight; LeRobot 0.6.1 (transformers 5.5.4: untied modules) writes both.
  Released LeRobot files are reported to lack embed_tokens. :func:`canonical_state_dict` fills
  both keys from embed_tokens if present (the tensor the network reads), else from lm_head, as
  LeRobot's _fix_pytorch_state_dict_keys does for files without embed_tokens.
- {EXPERT_LM_HEAD_KEY} does NOT exist here: both references' modules carry an unused
  (vocab x expert width) head for the expert (GemmaForCausalLM minus embed_tokens) and save_model
  writes it to the file; :func:`canonical_state_dict` drops exactly that key (263M params at real size).
"""

OPENPI_FP32_KEEP = (  # openpi PaliGemmaWithExpertModel.to_bfloat16_for_selected_params
    "vision_tower.vision_model.embeddings.patch_embedding.weight",
    "vision_tower.vision_model.embeddings.patch_embedding.bias",
    "vision_tower.vision_model.embeddings.position_embedding.weight",
    "input_layernorm",
    "post_attention_layernorm",
    "model.norm",
)
LEROBOT_FP32_KEEP = (  # LeRobot >= 0.6 keeps the whole vision path in fp32
    "vision_tower",
    "multi_modal_projector",
    "input_layernorm",
    "post_attention_layernorm",
    "model.norm",
)


@dataclass(frozen=True)
class GemmaDims:
    """Size of one Gemma stack (openpi ``gemma.Config`` minus LoRA)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class SiglipDims:
    """Size of the SigLIP vision tower."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int
    image_size: int


@dataclass(frozen=True)
class Pi0Dims:
    """Everything that sizes a :class:`Pi0Model`."""

    vision: SiglipDims
    paligemma: GemmaDims
    expert: GemmaDims
    vocab_size: int
    action_dim: int
    action_horizon: int
    pi05: bool


# openpi src/openpi/models/gemma.py get_config (LeRobot get_gemma_config has gemma_2b / gemma_300m).
# The *_lora variants (openpi LoRA fine-tuning configs) have the base sizes; their LoRA ranks only
# matter for training.
_GEMMA_2B = GemmaDims(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256)
_GEMMA_300M = GemmaDims(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)
VARIANTS: dict[str, GemmaDims] = {
    "gemma_2b": _GEMMA_2B,
    "gemma_2b_lora": _GEMMA_2B,
    "gemma_300m": _GEMMA_300M,
    "gemma_300m_lora": _GEMMA_300M,
    "dummy": GemmaDims(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
}
SO400M = SiglipDims(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=14, image_size=224)


def check_variant(dims: GemmaDims, variant: str) -> str | None:
    """Warning text if ``dims`` (read from tensor shapes) differ from the named variant, else None."""
    if variant not in VARIANTS:
        return f"unknown Gemma variant {variant!r} (known: {sorted(VARIANTS)}); sizes taken from the weights"
    expected = VARIANTS[variant]
    if dims == expected:
        return None
    diff = ", ".join(
        f"{name} {getattr(dims, name)} (variant {getattr(expected, name)})"
        for name in GemmaDims.__dataclass_fields__
        if getattr(dims, name) != getattr(expected, name)
    )
    return f"weights do not match Gemma variant {variant!r}: {diff}; sizes taken from the weights"


def _shape(state: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"model.safetensors has no tensor {key!r}; not an openpi/LeRobot pi0 checkpoint")
    return tuple(state[key].shape)


def _depth(state: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for key in state if (m := pattern.match(key))}
    if not found or found != set(range(len(found))):
        raise CheckpointError(f"model.safetensors: layers under {prefix!r} are missing or not numbered 0..N-1")
    return len(found)


def _expect(state: Mapping[str, Tensor], key: str, shape: tuple[int, ...]) -> None:
    if _shape(state, key) != shape:
        raise CheckpointError(
            f"model.safetensors: {key!r} has shape {_shape(state, key)}, expected {shape} from the other tensors"
        )


def _gemma_dims(state: Mapping[str, Tensor], prefix: str, width: int, name: str) -> GemmaDims:
    layer = prefix + "layers.0."
    q_out, q_in = _shape(state, layer + "self_attn.q_proj.weight")
    if q_in != width or q_out % GEMMA_HEADS:
        raise CheckpointError(
            f"model.safetensors: {name} q_proj {(q_out, q_in)} does not fit width {width} x {GEMMA_HEADS} heads"
        )
    head_dim = q_out // GEMMA_HEADS
    mlp_dim = _shape(state, layer + "mlp.gate_proj.weight")[0]
    depth = _depth(state, prefix + "layers.")
    for i in range(depth):
        lp = f"{prefix}layers.{i}."
        _expect(state, lp + "self_attn.q_proj.weight", (q_out, width))
        _expect(state, lp + "self_attn.k_proj.weight", (GEMMA_KV_HEADS * head_dim, width))
        _expect(state, lp + "self_attn.v_proj.weight", (GEMMA_KV_HEADS * head_dim, width))
        _expect(state, lp + "self_attn.o_proj.weight", (width, q_out))
        _expect(state, lp + "mlp.gate_proj.weight", (mlp_dim, width))
        _expect(state, lp + "mlp.up_proj.weight", (mlp_dim, width))
        _expect(state, lp + "mlp.down_proj.weight", (width, mlp_dim))
    return GemmaDims(width, depth, mlp_dim, GEMMA_HEADS, GEMMA_KV_HEADS, head_dim)


def _check_norms(state: Mapping[str, Tensor], prefix: str, dims: GemmaDims, adarms: bool, name: str) -> None:
    norms = [f"{prefix}layers.{i}.{n}" for i in range(dims.depth) for n in ("input_layernorm", "post_attention_layernorm")]
    for norm in [*norms, prefix + "norm"]:
        if adarms:
            if norm + ".weight" in state:
                raise CheckpointError(
                    f"model.safetensors: {norm}.weight is a plain RMSNorm but pi0.5 needs AdaRMS "
                    f"({norm}.dense.*): a pi0 checkpoint loaded as pi0.5?"
                )
            _expect(state, norm + ".dense.weight", (3 * dims.width, dims.width))
            _expect(state, norm + ".dense.bias", (3 * dims.width,))
        else:
            if norm + ".dense.weight" in state:
                raise CheckpointError(
                    f"model.safetensors: {norm}.dense.* is an AdaRMS norm (pi0.5) but {name} expects a "
                    "plain RMSNorm: a pi0.5 checkpoint loaded as pi0?"
                )
            _expect(state, norm + ".weight", (dims.width,))


def dims_from_state_dict(state: Mapping[str, Tensor], *, pi05: bool, action_horizon: int) -> Pi0Dims:
    """Read all sizes from tensor shapes of openpi-named keys (no ``model.`` prefix).

    Head counts are the published ones (Gemma 8 query / 1 KV, SigLIP 16); the image size comes
    from the position-embedding count. Inconsistent shapes raise :class:`CheckpointError`.
    """
    width, _, patch, patch_w = _shape(state, VISION + "embeddings.patch_embedding.weight")
    if patch != patch_w:
        raise CheckpointError(f"model.safetensors: non-square SigLIP patch {patch}x{patch_w}")
    num_pos = _shape(state, VISION + "embeddings.position_embedding.weight")[0]
    side = math.isqrt(num_pos)
    if side * side != num_pos or width % SIGLIP_HEADS:
        raise CheckpointError(
            f"model.safetensors: SigLIP has {num_pos} positions (not a square grid) or width {width} "
            f"not divisible by {SIGLIP_HEADS} heads"
        )
    v_mlp = _shape(state, VISION + "encoder.layers.0.mlp.fc1.weight")[0]
    v_depth = _depth(state, VISION + "encoder.layers.")
    for i in range(v_depth):
        lp = f"{VISION}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _expect(state, lp + f"self_attn.{proj}.weight", (width, width))
        _expect(state, lp + "mlp.fc1.weight", (v_mlp, width))
        _expect(state, lp + "mlp.fc2.weight", (width, v_mlp))
    _expect(state, VISION + "post_layernorm.weight", (width,))
    vision = SiglipDims(width, v_depth, v_mlp, SIGLIP_HEADS, patch, side * patch)

    embed_key = EMBED_KEY if EMBED_KEY in state else LM_HEAD_KEY
    vocab, p_width = _shape(state, embed_key)
    if EMBED_KEY in state and LM_HEAD_KEY in state:
        _expect(state, LM_HEAD_KEY, (vocab, p_width))
    _expect(state, PROJECTOR + "weight", (p_width, width))
    paligemma = _gemma_dims(state, LANGUAGE, p_width, "PaliGemma")
    _check_norms(state, LANGUAGE, paligemma, adarms=False, name="PaliGemma")

    e_width = _shape(state, EXPERT + "layers.0.self_attn.o_proj.weight")[0]
    expert = _gemma_dims(state, EXPERT, e_width, "the action expert")
    _check_norms(state, EXPERT, expert, adarms=pi05, name="pi0")
    if expert.head_dim != paligemma.head_dim or expert.depth != paligemma.depth:
        raise CheckpointError(
            f"model.safetensors: expert (depth {expert.depth}, head_dim {expert.head_dim}) and PaliGemma "
            f"(depth {paligemma.depth}, head_dim {paligemma.head_dim}) must agree for joint attention"
        )

    action_dim = _shape(state, "action_in_proj.weight")[1]
    _expect(state, "action_in_proj.weight", (e_width, action_dim))
    _expect(state, "action_out_proj.weight", (action_dim, e_width))
    if pi05:
        if "state_proj.weight" in state:
            raise CheckpointError("model.safetensors has state_proj (pi0) but pi0.5 was requested")
        _expect(state, "time_mlp_in.weight", (e_width, e_width))
        _expect(state, "time_mlp_out.weight", (e_width, e_width))
    else:
        if "time_mlp_in.weight" in state:
            raise CheckpointError(
                "model.safetensors has time_mlp_* but pi0 expects action_time_mlp_* (LeRobot renames "
                "time_mlp_* to action_time_mlp_* for pi0; pi0.5 checkpoints have time_mlp_*)"
            )
        _expect(state, "state_proj.weight", (e_width, action_dim))
        _expect(state, "action_time_mlp_in.weight", (e_width, 2 * e_width))
        _expect(state, "action_time_mlp_out.weight", (e_width, e_width))
    return Pi0Dims(vision, paligemma, expert, vocab, action_dim, action_horizon, pi05)


def tiny_dims(
    pi05: bool,
    action_horizon: int = 10,
    *,
    vocab_size: int = 300,
    action_dim: int = 32,
    image_size: int = 224,
    patch_size: int = 56,
) -> Pi0Dims:
    """A few-kB random test model that keeps the real head counts (8/1 Gemma, 16 SigLIP) and 224 px input."""
    return Pi0Dims(
        vision=SiglipDims(width=32, depth=2, mlp_dim=48, num_heads=SIGLIP_HEADS, patch_size=patch_size,
                          image_size=image_size),
        paligemma=GemmaDims(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8),
        expert=GemmaDims(width=16, depth=2, mlp_dim=32, num_heads=8, num_kv_heads=1, head_dim=8),
        vocab_size=vocab_size,
        action_dim=action_dim,
        action_horizon=action_horizon,
        pi05=pi05,
    )


def canonical_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """openpi-named file tensors -> exactly the keys of ``Pi0Model.state_dict()`` (see STATE_DICT_NOTES).

    Fills the tied ``embed_tokens`` / ``lm_head`` pair from ``embed_tokens`` if present, else
    from ``lm_head``, and drops the unused expert ``lm_head``. Nothing else is renamed (the
    ``model.`` prefix and LeRobot's pi0 ``time_mlp_*`` naming are the loader's business).
    """
    out = {k: v for k, v in state.items() if k != EXPERT_LM_HEAD_KEY}
    source = EMBED_KEY if EMBED_KEY in out else LM_HEAD_KEY
    if source not in out:
        raise CheckpointError(f"model.safetensors has neither {EMBED_KEY!r} nor {LM_HEAD_KEY!r}")
    out[EMBED_KEY] = out[LM_HEAD_KEY] = out[source]
    return out


class _TiedHead(nn.Module):
    """``paligemma.lm_head``: holds the embedding Parameter itself (tied), never applied."""

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight


class _PaliGemmaInner(nn.Module):
    """``paligemma.model``: vision tower, projector, language model."""

    def __init__(self, dims: Pi0Dims) -> None:
        super().__init__()
        v, p = dims.vision, dims.paligemma
        self.vision_tower = SiglipVisionTower(v.width, v.depth, v.mlp_dim, v.num_heads, v.patch_size, v.image_size)
        self.multi_modal_projector = nn.Module()
        self.multi_modal_projector.linear = nn.Linear(v.width, p.width)
        self.language_model = GemmaStack(
            p.width, p.depth, p.mlp_dim, p.num_heads, p.num_kv_heads, p.head_dim, vocab_size=dims.vocab_size
        )


class _PaliGemma(nn.Module):
    def __init__(self, dims: Pi0Dims) -> None:
        super().__init__()
        self.model = _PaliGemmaInner(dims)
        self.lm_head = _TiedHead(self.model.language_model.embed_tokens.weight)


class _GemmaExpert(nn.Module):
    def __init__(self, dims: Pi0Dims) -> None:
        super().__init__()
        e = dims.expert
        cond = e.width if dims.pi05 else None
        self.model = GemmaStack(e.width, e.depth, e.mlp_dim, e.num_heads, e.num_kv_heads, e.head_dim, cond_dim=cond)


class _PaliGemmaWithExpert(nn.Module):
    def __init__(self, dims: Pi0Dims) -> None:
        super().__init__()
        self.paligemma = _PaliGemma(dims)
        self.gemma_expert = _GemmaExpert(dims)


def time_embedding(t: Tensor, dim: int) -> Tensor:
    """Sin-cos embedding of flow time (B,) -> (B, dim) float32 (openpi ``create_sinusoidal_pos_embedding``)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = MIN_PERIOD * (MAX_PERIOD / MIN_PERIOD) ** fraction
    x = (1.0 / period * 2 * math.pi)[None, :] * t[:, None]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=1).to(torch.float32)


def _ar_attention(pad: Tensor, ar: Tensor) -> Tensor:
    """big_vision ``make_att_2d_masks``: (B, N) pad and ar masks -> (B, N, N) bool, query x key."""
    cum = torch.cumsum(ar.to(torch.int32), dim=1)
    return (cum[:, None, :] <= cum[:, :, None]) & (pad[:, None, :] & pad[:, :, None])


def _additive(allowed: Tensor) -> Tensor:
    """(B, S, T) bool -> (B, 1, S, T) float32 additive mask."""
    return torch.where(allowed[:, None], 0.0, MASK_VALUE).to(torch.float32)


@contextlib.contextmanager
def _stage(timer: StageTimer | None, name: str, device: torch.device) -> Iterator[None]:
    """Time a stage when a timer is given; on CUDA wait for the stage's kernels so the split is real."""
    if timer is None:
        yield
        return
    with timer(name):
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)


class Pi0Model(nn.Module):
    """pi0 (``dims.pi05`` False) or pi0.5 network; see the module docstring for the computation."""

    def __init__(self, dims: Pi0Dims) -> None:
        super().__init__()
        self.dims = dims
        width = dims.expert.width
        self.paligemma_with_expert = _PaliGemmaWithExpert(dims)
        self.action_in_proj = nn.Linear(dims.action_dim, width)
        self.action_out_proj = nn.Linear(width, dims.action_dim)
        if dims.pi05:
            self.time_mlp_in = nn.Linear(width, width)
            self.time_mlp_out = nn.Linear(width, width)
        else:
            self.state_proj = nn.Linear(dims.action_dim, width)
            self.action_time_mlp_in = nn.Linear(2 * width, width)
            self.action_time_mlp_out = nn.Linear(width, width)

    # -- precision -------------------------------------------------------------------------------
    def set_precision(
        self, dtype: torch.dtype, keep_fp32: Sequence[str] = OPENPI_FP32_KEEP, round_kept: bool = True
    ) -> None:
        """The references' precision policy: ``paligemma_with_expert`` in ``dtype`` except ``keep_fp32``.

        Both references cast only ``PaliGemmaWithExpertModel`` (``to_bfloat16_for_selected_params`` is
        its method, called by its ``__init__`` and by openpi's loader); the top-level projections
        (``action_in_proj``, ``action_out_proj``, ``state_proj``, ``action_time_mlp_*``,
        ``time_mlp_*``) stay float32. Inside, parameters whose name (relative to
        ``paligemma_with_expert``) contains a ``keep_fp32`` entry stay float32: the default is
        openpi's list (patch/position embeddings and all Gemma norms incl. AdaRMS ``dense``);
        :data:`LEROBOT_FP32_KEEP` is LeRobot >= 0.6's (adds the whole vision tower and projector).

        ``round_kept``: openpi's loader casts the loaded sub-model to ``dtype`` and then the kept
        parameters back to fp32, so their values are rounded to ``dtype`` (True, openpi); LeRobot
        casts at construction, before loading, so they keep the file's fp32 values (False, LeRobot).
        Either is a no-op for checkpoints stored in bf16.
        """
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"precision {dtype} unsupported; use torch.float32, torch.bfloat16 or torch.float16")
        inner = "paligemma_with_expert."
        for name, param in self.named_parameters():  # one tensor at a time: no full-size fp32 copy
            if not name.startswith(inner):
                param.data = param.data.to(torch.float32)
            elif any(sel in name[len(inner) :] for sel in keep_fp32):
                param.data = (param.data.to(dtype) if round_kept else param.data).to(torch.float32)
            else:
                param.data = param.data.to(dtype)

    @property
    def compute_dtype(self) -> torch.dtype:
        """Activation dtype of the Gemma stacks: that of the token embedding (never quantized)."""
        return self.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight.dtype

    # -- parts -----------------------------------------------------------------------------------
    def embed_images(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> projected patch tokens (B, patches, PaliGemma width)."""
        inner = self.paligemma_with_expert.paligemma.model
        features = inner.vision_tower(images)
        linear = inner.multi_modal_projector.linear
        return linear(features.to(input_dtype(linear, features.dtype))).to(self.compute_dtype)

    def _blank_image_tokens(self, images: Tensor) -> Tensor:
        v, p = self.dims.vision, self.dims.paligemma
        if images.shape[-2:] != (v.image_size, v.image_size):
            raise ValueError(f"images must be {v.image_size}x{v.image_size}, got {tuple(images.shape[-2:])}")
        n = (v.image_size // v.patch_size) ** 2
        return torch.zeros(images.shape[0], n, p.width, dtype=self.compute_dtype, device=images.device)

    def _prefix(
        self,
        images: Sequence[Tensor],
        image_masks: Sequence[Tensor],
        tokens: Tensor,
        token_masks: Tensor,
        timer: StageTimer | None,
    ) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        """Vision + one PaliGemma pass: (KV cache, prefix pad mask (B, P))."""
        if len(images) != len(image_masks) or not images:
            raise ValueError(f"got {len(images)} images and {len(image_masks)} image masks (need >= 1 each)")
        lm = self.paligemma_with_expert.paligemma.model.language_model
        with _stage(timer, "vision", tokens.device):
            embs, pads = [], []
            for image, mask in zip(images, image_masks, strict=True):
                mask = mask.to(torch.bool)
                # A slot masked in every row (LIBERO's missing right wrist) is not encoded: its tokens
                # are masked keys, whose softmax weight is exactly 0, so any finite stand-in (zeros)
                # gives the same result as the references' SigLIP pass over the blank image.
                emb = self.embed_images(image) if bool(mask.any()) else self._blank_image_tokens(image)
                embs.append(emb)
                pads.append(mask[:, None].expand(emb.shape[0], emb.shape[1]))
        with _stage(timer, "prefix", tokens.device):
            lang = lm.embed_tokens(tokens)
            embs.append((lang * math.sqrt(lang.shape[-1])).to(self.compute_dtype))
            pads.append(token_masks.to(torch.bool))
            x = torch.cat(embs, dim=1)
            pad = torch.cat(pads, dim=1)
            positions = torch.cumsum(pad.to(torch.int64), dim=1) - 1
            allowed = pad[:, None, :] & pad[:, :, None]  # bidirectional among valid tokens
            cache = lm.prefill(x, positions, _additive(allowed))
        return cache, pad

    def _suffix(self, state: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Expert input tokens, their ar-mask (S,) and the AdaRMS condition (pi0.5) for one step."""
        dtype = self.compute_dtype
        emb = time_embedding(t, self.action_in_proj.out_features)
        actions = self.action_in_proj(x_t.to(input_dtype(self.action_in_proj, dtype)))
        horizon = actions.shape[1]
        if self.dims.pi05:
            cond = F.silu(self.time_mlp_in(emb.to(input_dtype(self.time_mlp_in, dtype))))
            cond = F.silu(self.time_mlp_out(cond.to(input_dtype(self.time_mlp_out, dtype))))
            ar = torch.zeros(horizon, dtype=torch.bool, device=x_t.device)
            ar[0] = True
            return actions.to(dtype), ar, cond  # cond keeps its dtype: AdaRMS casts it for `dense`
        state_tok = self.state_proj(state.to(input_dtype(self.state_proj, dtype)))[:, None, :]
        mixed = torch.cat([actions, emb[:, None, :].expand(-1, horizon, -1).to(actions.dtype)], dim=2)
        hidden = F.silu(self.action_time_mlp_in(mixed.to(input_dtype(self.action_time_mlp_in, dtype))))
        tokens = self.action_time_mlp_out(hidden.to(input_dtype(self.action_time_mlp_out, dtype)))
        ar = torch.zeros(horizon + 1, dtype=torch.bool, device=x_t.device)
        ar[:2] = True
        return torch.cat([state_tok.to(dtype), tokens.to(dtype)], dim=1), ar, None

    def denoise_step(
        self, cache: list[tuple[Tensor, Tensor]], prefix_pad: Tensor, state: Tensor, x_t: Tensor, t: Tensor
    ) -> Tensor:
        """Velocity v_t (B, H, action_dim) float32 from the expert reading the prefix cache."""
        tokens, ar, cond = self._suffix(state, x_t, t)
        b, s = tokens.shape[:2]
        suffix_pad = torch.ones(b, s, dtype=torch.bool, device=tokens.device)
        allowed = torch.cat(
            [prefix_pad[:, None, :].expand(b, s, -1), _ar_attention(suffix_pad, ar[None].expand(b, s))], dim=2
        )
        positions = prefix_pad.sum(dim=1, keepdim=True) + torch.arange(s, device=tokens.device)[None]
        out = self.paligemma_with_expert.gemma_expert.model.decode(tokens, positions, _additive(allowed), cache, cond)
        out = out[:, -x_t.shape[1] :]
        return self.action_out_proj(out.to(input_dtype(self.action_out_proj, out.dtype))).float()

    @torch.no_grad()
    def sample_actions(
        self,
        images: Sequence[Tensor],
        image_masks: Sequence[Tensor],
        tokens: Tensor,
        token_masks: Tensor,
        state: Tensor,
        noise: Tensor,
        num_steps: int = 10,
        timer: StageTimer | None = None,
        time_schedule: str = "openpi",
        rtc: RTCGuide | None = None,
    ) -> Tensor:
        """Integrate the flow from ``noise`` (t = 1) to actions (t = 0) with ``num_steps`` Euler steps.

        Args:
            images: One (B, 3, H, W) float tensor in [-1, 1] per camera slot, in the model's slot order.
            image_masks: One (B,) bool per slot (False = missing camera: its tokens are masked out).
            tokens: (B, L) int64 prompt tokens, right padded.
            token_masks: (B, L) bool, False on padding.
            state: (B, action_dim) normalised, zero-padded state (pi0.5 ignores it).
            noise: (B, action_horizon, action_dim) float32.
            num_steps: Euler steps (the references use 10).
            timer: Optional; stages "vision", "prefix" (once per call) and "denoise" (all steps).
            time_schedule: How t is formed, as each reference: "openpi" accumulates ``t += dt`` in
                float32 (t = 1, 0.9, 0.8000001, ...), "lerobot" computes ``1 + step * dt`` in float64
                then float32. The schedules differ by < 1e-7 in t, ~2e-5 in the tiny fixtures' actions.
            rtc: Real-time-chunking guidance (:mod:`vla_gym.policies.pi0.rtc`) wrapping each step's
                velocity, or None (plain sampling).

        Returns:
            (B, action_horizon, action_dim) float32.
        """
        d = self.dims
        b = tokens.shape[0]
        if noise.shape != (b, d.action_horizon, d.action_dim):
            raise ValueError(f"noise must be {(b, d.action_horizon, d.action_dim)}, got {tuple(noise.shape)}")
        if state.shape != (b, d.action_dim):
            raise ValueError(f"state must be {(b, d.action_dim)} (normalised, zero-padded), got {tuple(state.shape)}")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if time_schedule not in TIME_SCHEDULES:
            raise ValueError(f"time_schedule must be one of {TIME_SCHEDULES}, got {time_schedule!r}")
        cache, prefix_pad = self._prefix(images, image_masks, tokens, token_masks, timer)
        with _stage(timer, "denoise", tokens.device):
            x_t = noise.to(torch.float32)
            dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=x_t.device)
            t = torch.ones((), dtype=torch.float32, device=x_t.device)
            for step in range(num_steps):
                if time_schedule == "lerobot":
                    t = torch.tensor(1.0 + step * (-1.0 / num_steps), dtype=torch.float32, device=x_t.device)
                if rtc is None:
                    v_t = self.denoise_step(cache, prefix_pad, state, x_t, t.expand(b))
                else:
                    velocity = functools.partial(self.denoise_step, cache, prefix_pad, state, t=t.expand(b))
                    v_t = rtc.velocity(velocity, x_t, t)
                x_t = x_t + dt * v_t
                t = t + dt
        return x_t
