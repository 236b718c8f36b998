"""FiLM language conditioning of the OpenVLA-OFT vision towers (ALOHA-style OFT+ checkpoints).

Reference (moojink/openvla-oft): ``prismatic/models/film_vit_wrapper.py``,
``experiments/robot/openvla_utils.py::_apply_film_to_vla`` and ``vla-scripts/finetune.py``.

- ``FiLMedPrismaticVisionBackbone`` holds the original backbone as ``vision_backbone``; every
  block of *both* towers becomes ``FiLMedVisionTransformerBlock(block, scale, shift)`` with
  ``scale``/``shift = nn.Linear(llm_dim, vit.num_features)``. In the block, FiLM sits between
  attention and MLP::

      x = x + drop_path1(ls1(attn(norm1(x))))
      x = x * (1 + gamma[:, None]) + beta[:, None]      # gamma = scale(lang), beta = shift(lang)
      x = x + drop_path2(ls2(mlp(norm2(x))))

  ``lang`` is the mean over the sequence of the *raw* input embeddings of all non-action
  positions (``<s>``, prompt, the empty piece 29871 and the stop token ``</s>``), taken before
  the action embeddings are zeroed. Features are still those of the second-to-last block.
- ``vision_backbone--<step>_checkpoint.pt`` is ``vla.module.vision_backbone.state_dict()`` of the
  PEFT-wrapped model: keys ``vision_backbone.{featurizer,fused_featurizer}.blocks.<i>.block.*``,
  ``...blocks.<i>.{scale,shift}.{weight,bias}``, and for every LoRA-wrapped layer
  ``<layer>.base_layer.{weight,bias}`` + ``<layer>.lora_{A,B}.default.weight`` (unmerged). It has
  no ``module.`` prefix (saved from the module inside DDP), but one is stripped if present, as
  ``finetune.py::load_checkpoint`` does. The eval loads it with ``strict=True`` into a fresh
  LoRA of rank ``r`` and ``lora_alpha = min(r, 16)``; here the LoRA is merged into the weights
  (``W + B @ A * alpha / r`` in float32, stored in the model dtype) instead of kept unmerged,
  so outputs may differ from the reference by bf16 rounding of the vision weights only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from vla_gym.policies.openvla.errors import CheckpointError
from vla_gym.policies.openvla.modeling import PrismaticVisionBackbone
from vla_gym.policies.toolkit.lora import merge_lora_state
from vla_gym.policies.toolkit.safe_load import load_torch_state_dict



class FiLMedVisionTransformerBlock(nn.Module):
    """A timm ViT block with FiLM ``x * (1 + gamma) + beta`` between attention and MLP."""

    def __init__(self, block: nn.Module, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.block = block
        self.scale = nn.Linear(llm_dim, vision_dim)
        self.shift = nn.Linear(llm_dim, vision_dim)

    def forward(self, x: torch.Tensor, average_language_embedding: torch.Tensor) -> torch.Tensor:
        """(B, N, vision_dim), (B, llm_dim) -> (B, N, vision_dim)."""
        b = self.block
        gamma = self.scale(average_language_embedding)[:, None, :]
        beta = self.shift(average_language_embedding)[:, None, :]
        x = x + b.drop_path1(b.ls1(b.attn(b.norm1(x))))
        x = x * (1 + gamma) + beta
        return x + b.drop_path2(b.ls2(b.mlp(b.norm2(x))))


def _wrap_vit(vit: nn.Module, llm_dim: int, device: torch.device | str | None) -> None:
    """Replace ``vit.blocks`` by FiLMed wrappers (same ``blocks.<i>`` indices as the reference)."""
    dim = int(vit.num_features)
    with torch.device(device or "cpu"):
        vit.blocks = nn.Sequential(*[FiLMedVisionTransformerBlock(blk, dim, llm_dim) for blk in vit.blocks])


def film_penultimate_patches(vit: nn.Module, pixels: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
    """FiLMed patch tokens after block ``depth - 2``, no final norm, prefix tokens dropped.

    The reference runs every block and keeps the output of ``depth - 2``; the last block's output
    is unused, so it is skipped here.
    """
    x = vit.patch_embed(pixels)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    for block in list(vit.blocks)[: len(vit.blocks) - 1]:
        x = block(x, lang)
    return x[:, vit.num_prefix_tokens :]


class FiLMedPrismaticVisionBackbone(nn.Module):
    """Both towers FiLMed by the averaged instruction embedding; wraps ``vision_backbone`` in place."""

    def __init__(
        self, vision_backbone: PrismaticVisionBackbone, llm_dim: int, device: torch.device | str | None = None
    ) -> None:
        """``device="meta"`` skips the random init of the new layers (a loader assigns them)."""
        super().__init__()
        self.vision_backbone = vision_backbone
        self.llm_dim = llm_dim
        _wrap_vit(vision_backbone.featurizer, llm_dim, device)
        if vision_backbone.use_fused_vision_backbone:
            _wrap_vit(vision_backbone.fused_featurizer, llm_dim, device)

    @property
    def num_patches(self) -> int:
        """Patch tokens per image."""
        return self.vision_backbone.num_patches

    @property
    def embed_dim(self) -> int:
        """Feature width of the (fused) towers."""
        return self.vision_backbone.embed_dim

    def forward(
        self,
        pixel_values: torch.Tensor,
        language_embeddings: torch.Tensor | None = None,
        average_language_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, 6*k (or 3*k), H, W) -> (B, k * num_patches, embed_dim), FiLMed by the instruction.

        Give either ``language_embeddings`` (B, L, llm_dim), averaged over L here, or their
        average (B, llm_dim) directly: a batch of instructions of different lengths is averaged
        per row by the caller, without padding entering the mean.
        """
        if (language_embeddings is None) == (average_language_embedding is None):
            raise ValueError("pass exactly one of language_embeddings and average_language_embedding")
        lang = average_language_embedding
        if lang is None:
            lang = language_embeddings.mean(dim=1)
        vb = self.vision_backbone
        if not vb.use_fused_vision_backbone:
            chunks = torch.split(pixel_values, 3, dim=1)
            return torch.cat([film_penultimate_patches(vb.featurizer, c, lang) for c in chunks], dim=1)
        out = []
        for img in torch.split(pixel_values, 6, dim=1):
            regular, fused = torch.split(img, [3, 3], dim=1)
            out.append(
                torch.cat(
                    [
                        film_penultimate_patches(vb.featurizer, regular, lang),
                        film_penultimate_patches(vb.fused_featurizer, fused, lang),
                    ],
                    dim=2,
                )
            )
        return torch.cat(out, dim=1)


def oft_vision_lora_scaling(r: int) -> float:
    """OFT's FiLM vision LoRA: ``alpha = min(r, 16)`` as the OFT eval/finetune scripts fix it in code.

    The checkpoint holds no adapter config, and any other alpha would fail the reference's strict load.
    """
    return min(r, 16) / r


def load_film_backbone(backbone: FiLMedPrismaticVisionBackbone, file: Path, dtype: torch.dtype) -> None:
    """Load ``vision_backbone--<step>_checkpoint.pt`` key-for-key (after merging its LoRA), strict.

    Tensors are assigned (``assign=True``) in ``dtype`` (the reference casts the FiLMed backbone to
    bf16), so FiLM layers built on ``meta`` need no initialisation.
    """
    state = merge_lora_state(load_torch_state_dict(file), oft_vision_lora_scaling, str(file))
    expected = backbone.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{file} does not match the FiLMed vision backbone built from config.json: "
            f"{len(missing)} missing (e.g. {missing[:4]}), {len(unexpected)} unexpected (e.g. {unexpected[:4]})"
        )
    bad = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        raise CheckpointError(
            f"{file}: {len(bad)} tensors have the wrong shape, e.g. {bad[0]}: "
            f"{tuple(state[bad[0]].shape)} vs {tuple(expected[bad[0]].shape)}"
        )
    backbone.load_state_dict({k: v.to(dtype).contiguous() for k, v in state.items()}, strict=True, assign=True)


__all__ = [
    "FiLMedPrismaticVisionBackbone",
    "FiLMedVisionTransformerBlock",
    "film_penultimate_patches",
    "load_film_backbone",
    "oft_vision_lora_scaling",
]
