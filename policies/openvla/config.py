"""Read an OpenVLA ``config.json`` (the Prismatic/OpenVLA HF release format) without remote code.

The release's ``config.json`` names its backbones by id (``vision_backbone_id``,
``timm_model_ids``) and stores only the *non-default* Llama keys in ``text_config``
(``{"model_type": "llama", "pad_token_id": 32000, "vocab_size": 32064, ...}``). The rest came
from the ``LlamaConfig`` defaults of transformers 4.40.1, which is what the weights were
trained with; we pin those defaults here instead of trusting today's ``LlamaConfig`` defaults
(transformers 5 moved rope settings into ``rope_parameters``).

Tiny test checkpoints (:mod:`.make_tiny`) add one key the releases do not have,
``vla_gym_timm_overrides`` (per tower: ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``),
so the same timm architectures are built at toy size. Real releases never carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vla_gym.policies.openvla.errors import CheckpointError

# Prismatic id -> timm ids / resolution, as in the reference ``configuration_prismatic.py``.
VISION_BACKBONE_TO_TIMM_ID: dict[str, list[str]] = {
    "dinosiglip-vit-so-224px": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "dinosiglip-vit-so-384px": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_384"],
    "siglip-vit-so400m": ["vit_so400m_patch14_siglip_224"],
    "dinov2-vit-l": ["vit_large_patch14_reg4_dinov2.lvd142m"],
}
VISION_BACKBONE_TO_RESOLUTION: dict[str, list[int]] = {
    "dinosiglip-vit-so-224px": [224, 224],
    "dinosiglip-vit-so-384px": [384, 384],
    "siglip-vit-so400m": [224],
    "dinov2-vit-l": [224],
}

# transformers 4.40.1 ``LlamaConfig`` defaults (= Llama-2-7B), the stack the releases were saved with.
LLAMA2_7B_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,  # None -> num_attention_heads (MHA)
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

SUPPORTED_ARCH = {"no-align+fused-gelu-mlp", "no-align+gelu-mlp", "gelu-mlp", "fused-gelu-mlp"}


@dataclass(frozen=True)
class OpenVLAConfig:
    """The subset of an OpenVLA ``config.json`` the model needs, validated.

    Attributes:
        timm_model_ids: timm architecture ids, one per vision tower (DINOv2 first, then SigLIP).
        image_sizes: Input resolution of each tower.
        use_fused_vision_backbone: Two towers whose patch features are concatenated.
        timm_overrides: Per-tower timm kwargs (tiny checkpoints only; empty for releases).
        text_config: Complete Llama config kwargs (defaults filled in).
        pad_to_multiple_of: Embedding padding; ``vocab_size - pad_to_multiple_of`` is the
            de-tokenising vocabulary size (32064 - 64 = 32000 for the releases).
        n_action_bins: Number of action bins (256).
        norm_stats: Dataset statistics keyed by dataset name (may be overridden by
            ``dataset_statistics.json``).
        raw: The parsed JSON, kept for bookkeeping.
    """

    timm_model_ids: list[str]
    image_sizes: list[int]
    use_fused_vision_backbone: bool
    timm_overrides: list[dict[str, Any]]
    text_config: dict[str, Any]
    pad_to_multiple_of: int
    n_action_bins: int
    norm_stats: dict[str, Any]
    arch_specifier: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def llm_dim(self) -> int:
        """Hidden size of the language model."""
        return int(self.text_config["hidden_size"])

    @property
    def embedding_vocab_size(self) -> int:
        """Rows of the (padded) embedding matrix, e.g. 32064."""
        return int(self.text_config["vocab_size"])

    @property
    def action_vocab_size(self) -> int:
        """Vocabulary size used to de-tokenise actions (reference: text vocab - pad_to_multiple_of)."""
        return self.embedding_vocab_size - self.pad_to_multiple_of

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> OpenVLAConfig:
        """Validate a parsed ``config.json``; raise :class:`CheckpointError` naming bad keys."""
        model_type = raw.get("model_type")
        if model_type not in ("openvla", "prismatic"):
            raise CheckpointError(
                f"{source}: model_type is {model_type!r}, expected 'openvla'. Point `checkpoint` at an "
                "OpenVLA HF-format release directory (e.g. a local copy of openvla/openvla-7b)."
            )
        backbone_id = raw.get("vision_backbone_id")
        timm_ids = raw.get("timm_model_ids") or VISION_BACKBONE_TO_TIMM_ID.get(backbone_id or "")
        if not timm_ids:
            raise CheckpointError(
                f"{source}: unknown vision_backbone_id {backbone_id!r} and no timm_model_ids; "
                f"known ids: {sorted(VISION_BACKBONE_TO_TIMM_ID)}"
            )
        image_sizes = raw.get("image_sizes") or VISION_BACKBONE_TO_RESOLUTION[backbone_id]
        fused = raw.get("use_fused_vision_backbone")
        if fused is None:
            fused = len(timm_ids) == 2
        if bool(fused) != (len(timm_ids) == 2):
            raise CheckpointError(
                f"{source}: use_fused_vision_backbone={fused} but {len(timm_ids)} timm_model_ids {timm_ids}"
            )
        act_layers = raw.get("timm_override_act_layers") or [None] * len(timm_ids)
        if any(a is not None for a in act_layers):
            raise CheckpointError(
                f"{source}: timm_override_act_layers={act_layers} (e.g. CLIP quick_gelu) is not supported; "
                "only the DINOv2/SigLIP backbones of OpenVLA are."
            )
        arch = raw.get("arch_specifier", "no-align+fused-gelu-mlp")
        if arch not in SUPPORTED_ARCH:
            raise CheckpointError(
                f"{source}: arch_specifier {arch!r} not supported; expected one of {SUPPORTED_ARCH}"
            )
        if ("fused" in arch) != bool(fused):
            raise CheckpointError(
                f"{source}: arch_specifier {arch!r} does not match use_fused_vision_backbone={fused}"
            )
        text = raw.get("text_config")
        if not isinstance(text, dict):
            raise CheckpointError(f"{source}: missing `text_config` (the Llama config dict)")
        if text.get("model_type", "llama") != "llama":
            raise CheckpointError(
                f"{source}: text_config.model_type {text.get('model_type')!r}; only llama is supported"
            )
        full_text = dict(LLAMA2_7B_DEFAULTS)
        full_text.update({k: v for k, v in text.items() if k in LLAMA2_7B_DEFAULTS or k == "pad_token_id"})
        if "rope_parameters" in text and isinstance(text["rope_parameters"], dict):
            full_text["rope_theta"] = text["rope_parameters"].get("rope_theta", full_text["rope_theta"])
        if text.get("rope_scaling"):
            raise CheckpointError(
                f"{source}: text_config.rope_scaling={text['rope_scaling']} is not supported"
            )
        if full_text["num_key_value_heads"] is None:
            full_text["num_key_value_heads"] = full_text["num_attention_heads"]
        full_text.setdefault("pad_token_id", raw.get("pad_token_id", 32000))
        overrides = raw.get("vla_gym_timm_overrides") or [{} for _ in timm_ids]
        if len(overrides) != len(timm_ids):
            raise CheckpointError(f"{source}: vla_gym_timm_overrides must have one entry per timm id")
        pad_multiple = int(raw.get("pad_to_multiple_of", 64))
        cfg = cls(
            timm_model_ids=list(timm_ids),
            image_sizes=[int(s) for s in image_sizes],
            use_fused_vision_backbone=bool(fused),
            timm_overrides=[dict(o) for o in overrides],
            text_config=full_text,
            pad_to_multiple_of=pad_multiple,
            n_action_bins=int(raw.get("n_action_bins", 256)),
            norm_stats=dict(raw.get("norm_stats") or {}),
            arch_specifier=arch,
            raw=raw,
        )
        if cfg.action_vocab_size < cfg.n_action_bins:
            raise CheckpointError(
                f"{source}: vocabulary of {cfg.action_vocab_size} tokens cannot hold "
                f"{cfg.n_action_bins} action bins"
            )
        return cfg
