"""OpenVLA network built from today's timm and transformers under the released parameter names.

Module tree (= state-dict prefixes of the HF release, so ``load_state_dict(strict=True)`` works):

- ``vision_backbone.featurizer``: timm ViT (DINOv2 ViT-L/14 + 4 registers), ``num_classes=0``.
- ``vision_backbone.fused_featurizer``: timm ViT (SigLIP So400m/14, keeps its ``attn_pool``).
- ``projector.fc1/fc2/fc3``: fused GELU MLP, vision_dim -> 4*vision_dim -> llm_dim -> llm_dim.
- ``language_model``: ``transformers.LlamaForCausalLM`` (``model.*``, ``lm_head.weight``).

Two details of the reference are reproduced on purpose: timm ``LayerScale.gamma`` is stored
as ``scale_factor`` (HF renamed any parameter containing "gamma"), and the features are the
patch tokens of the *second-to-last* block without the final norm (the reference patches
``forward`` to ``get_intermediate_layers(n={depth - 2})``).
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from vla_gym.policies.openvla.config import OpenVLAConfig


class ScaleFactorLayerScale(nn.Module):
    """timm ``LayerScale`` with its parameter named ``scale_factor`` as in the release."""

    def __init__(self, gamma: torch.Tensor) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(gamma.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale channels (never in place: inputs may be shared)."""
        return x * self.scale_factor


def _rename_layer_scales(vit: nn.Module) -> None:
    from timm.layers import LayerScale

    for block in getattr(vit, "blocks", []):
        for name in ("ls1", "ls2"):
            module = getattr(block, name, None)
            if isinstance(module, LayerScale):
                setattr(block, name, ScaleFactorLayerScale(module.gamma))


def build_timm_vit(model_id: str, img_size: int, overrides: dict[str, Any]) -> nn.Module:
    """Create a randomly initialised timm ViT by architecture id (no download: pretrained=False)."""
    arch = model_id.split(".")[0]  # "vit_large_patch14_reg4_dinov2.lvd142m" -> architecture name
    vit = timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size, **overrides)
    _rename_layer_scales(vit)
    return vit


def vit_penultimate_patches(vit: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Patch tokens after block ``depth - 2`` (second to last), no final norm, prefix tokens dropped.

    Same result as timm's ``get_intermediate_layers(x, n={depth - 2})[0]``, without running the
    last block.
    """
    x = vit.patch_embed(pixels)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    depth = len(vit.blocks)
    for block in vit.blocks[: depth - 1]:
        x = block(x)
    return x[:, vit.num_prefix_tokens :]


class PrismaticVisionBackbone(nn.Module):
    """DINOv2 (+ SigLIP) towers; input is the channel-stacked 6-channel pixel tensor."""

    def __init__(self, cfg: OpenVLAConfig) -> None:
        super().__init__()
        self.use_fused_vision_backbone = cfg.use_fused_vision_backbone
        self.featurizer = build_timm_vit(cfg.timm_model_ids[0], cfg.image_sizes[0], cfg.timm_overrides[0])
        self.embed_dim = int(self.featurizer.embed_dim)
        if self.use_fused_vision_backbone:
            self.fused_featurizer = build_timm_vit(
                cfg.timm_model_ids[1], cfg.image_sizes[1], cfg.timm_overrides[1]
            )
            self.embed_dim += int(self.fused_featurizer.embed_dim)

    @property
    def num_patches(self) -> int:
        """Patch tokens per image (256 at 224 px with patch 14)."""
        return int(self.featurizer.patch_embed.num_patches)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3 or 6, H, W) -> (B, num_patches, embed_dim)."""
        if not self.use_fused_vision_backbone:
            return vit_penultimate_patches(self.featurizer, pixel_values)
        img, img_fused = torch.split(pixel_values, [3, 3], dim=1)
        return torch.cat(
            [
                vit_penultimate_patches(self.featurizer, img),
                vit_penultimate_patches(self.fused_featurizer, img_fused),
            ],
            dim=2,
        )


class PrismaticProjector(nn.Module):
    """Vision -> LLM projector (``fc1/fc2[/fc3]`` with GELU), as in the release."""

    def __init__(self, fused: bool, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, vision_dim) -> (B, N, llm_dim)."""
        x = self.fc2(self.act(self.fc1(patches)))
        if self.fused:
            x = self.fc3(self.act(x))
        return x


def llama_config(cfg: OpenVLAConfig) -> LlamaConfig:
    """Translate the pinned Llama kwargs into a transformers ``LlamaConfig`` of today."""
    t = dict(cfg.text_config)
    rope_theta = t.pop("rope_theta")
    lc = LlamaConfig(**t)
    # transformers 5 keeps rope settings in `rope_parameters`; older ones in `rope_theta`.
    if hasattr(lc, "rope_parameters") and isinstance(lc.rope_parameters, dict):
        lc.rope_parameters = {**lc.rope_parameters, "rope_theta": rope_theta, "rope_type": "default"}
    else:  # pragma: no cover - transformers 4.x
        lc.rope_theta = rope_theta
    lc._attn_implementation = "sdpa"
    return lc


class OpenVLAModel(nn.Module):
    """Vision backbone + projector + Llama; image patches are inserted right after ``<s>``."""

    def __init__(self, cfg: OpenVLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_backbone = PrismaticVisionBackbone(cfg)
        self.projector = PrismaticProjector(
            cfg.use_fused_vision_backbone, self.vision_backbone.embed_dim, cfg.llm_dim
        )
        self.language_model = LlamaForCausalLM(llama_config(cfg))

    @property
    def compute_dtype(self) -> torch.dtype:
        """Dtype activations run in (that of the input embedding table)."""
        return self.language_model.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.language_model.get_input_embeddings().weight.device

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 6*k, H, W) with k images channel-stacked -> (B, k*num_patches, llm_dim)."""
        step = 6 if self.cfg.use_fused_vision_backbone else 3
        chunks = torch.split(pixel_values, step, dim=1)
        patches = torch.cat([self.vision_backbone(c) for c in chunks], dim=1)
        return self.projector(patches)

    def multimodal_embeddings(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, extra_tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[emb(<s>), patches, (extra), emb(rest of prompt)]`` as the reference builds it."""
        text = self.language_model.get_input_embeddings()(input_ids)
        vision = self.embed_images(pixel_values.to(self.compute_dtype))
        if extra_tokens is not None:
            vision = torch.cat([vision, extra_tokens.to(vision.dtype)], dim=1)
        return torch.cat([text[:, :1], vision, text[:, 1:]], dim=1)

    def generate_greedy(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None,
    ) -> torch.Tensor:
        """Greedy decoding over *all* logits with a KV cache; returns prompt + new ids.

        Mirrors ``generate(do_sample=False)`` of the reference: argmax over the full
        (padded) vocabulary, causal attention, stop early on ``eos_token_id``.
        """
        return self.generate_greedy_with_logits(input_ids, pixel_values, max_new_tokens, eos_token_id)[0]

    @torch.no_grad()  # not inference_mode: quanto's packed weights reject inference tensors
    def generate_greedy_with_logits(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`generate_greedy` plus the logits each new id was the argmax of.

        Returns ``(ids, logits)``: ids (B, L + n), logits float32 (B, n, padded vocab), n the
        number of generated ids (``max_new_tokens`` unless EOS came first). The logits are the
        model's own (bf16 values widened exactly), so fidelity can be compared below the token level.
        """
        from transformers import DynamicCache

        embeds = self.multimodal_embeddings(input_ids, pixel_values)
        cache = DynamicCache()
        out = self.language_model(inputs_embeds=embeds, cache=cache, use_cache=True, logits_to_keep=1)
        ids = input_ids
        steps: list[torch.Tensor] = []
        position = embeds.shape[1]
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()
            steps.append(logits)
            next_id = logits.argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
            if (eos_token_id is not None and int(next_id) == eos_token_id) or step == max_new_tokens - 1:
                break
            pos = torch.tensor([[position]], device=ids.device)
            out = self.language_model(
                input_ids=next_id, cache=cache, use_cache=True, position_ids=pos, logits_to_keep=1
            )
            position += 1
        if not steps:  # max_new_tokens == 0
            return ids, out.logits[:, :0].float()
        return ids, torch.stack(steps, dim=1)
