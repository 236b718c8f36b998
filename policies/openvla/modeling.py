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
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[emb(<s>), patches, emb(rest of prompt)]`` per row, as the reference builds it.

        ``input_ids`` (B, L) may be *left*-padded, with ``attention_mask`` (B, L) 1 on real
        tokens: the patches then go right after each row's own ``<s>`` (the first real token),
        so row b is ``[pads, <s>, patches, prompt]`` (B, L + n_patches, llm_dim).
        """
        text = self.language_model.get_input_embeddings()(input_ids)
        vision = self.embed_images(pixel_values.to(self.compute_dtype))
        if attention_mask is None:
            return torch.cat([text[:, :1], vision, text[:, 1:]], dim=1)
        pads = (attention_mask.shape[1] - attention_mask.sum(dim=1)).tolist()
        rows = [
            torch.cat([text[b, : p + 1], vision[b], text[b, p + 1 :]], dim=0) for b, p in enumerate(pads)
        ]
        return torch.stack(rows)

    def generate_greedy(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Greedy decoding over *all* logits with a KV cache; returns prompt + new ids.

        Mirrors ``generate(do_sample=False)`` of the reference: argmax over the full
        (padded) vocabulary, causal attention, stop early on ``eos_token_id``.
        """
        return self.generate_greedy_with_logits(
            input_ids, pixel_values, max_new_tokens, eos_token_id, attention_mask
        )[0]

    @torch.no_grad()  # not inference_mode: quanto's packed weights reject inference tensors
    def generate_greedy_with_logits(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`generate_greedy` plus the logits each new id was the argmax of, per row.

        ``input_ids`` (B, L): one prompt per row, *left*-padded to a common length when the
        prompts differ, with ``attention_mask`` (B, L) marking the real tokens (None: no
        padding, the B = 1 path of the reference). Padding is masked out of attention and the
        position ids count real tokens only, so each row is decoded as if it were alone.

        Returns ``(ids, logits)``: ids (B, L + n), logits float32 (B, n, padded vocab), n the
        number of decoding steps (``max_new_tokens`` unless every row emitted EOS first). A row
        that emitted EOS keeps EOS in all later slots (its later logits are meaningless); see
        :func:`generated_lengths`. The logits are the model's own (bf16 values widened exactly),
        so fidelity can be compared below the token level.
        """
        from transformers import DynamicCache

        b = input_ids.shape[0]
        padded = attention_mask is not None and not bool(attention_mask.all())
        embeds = self.multimodal_embeddings(input_ids, pixel_values, attention_mask if padded else None)
        mask = positions = None
        if padded:
            n_vision = embeds.shape[1] - input_ids.shape[1]
            # row b: [pads, <s>, patches, prompt]: the patches are real tokens too
            mask = _left_aligned(torch.cat([attention_mask.new_ones((b, n_vision)), attention_mask], dim=1))
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
            logits_to_keep=1,
        )
        ids = input_ids
        steps: list[torch.Tensor] = []
        done = torch.zeros(b, dtype=torch.bool, device=ids.device)
        # next position of each row = its number of real tokens
        position = (mask.sum(dim=1, keepdim=True) if padded else torch.full((b, 1), embeds.shape[1]))
        position = position.to(ids.device)
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()
            steps.append(logits)
            next_id = logits.argmax(dim=-1, keepdim=True)
            if eos_token_id is not None:
                next_id = torch.where(done[:, None], torch.full_like(next_id, eos_token_id), next_id)
                done = done | (next_id[:, 0] == eos_token_id)
            ids = torch.cat([ids, next_id], dim=1)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            if padded:
                mask = torch.cat([mask, mask.new_ones((b, 1))], dim=1)
            out = self.language_model(
                input_ids=next_id, attention_mask=mask, cache=cache, use_cache=True, position_ids=position,
                logits_to_keep=1,
            )
            position = position + 1
        if not steps:  # max_new_tokens == 0
            return ids, out.logits[:, :0].float()
        return ids, torch.stack(steps, dim=1)


def _left_aligned(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 mask with each row's ones moved to the right end (same count): left padding."""
    n = mask.sum(dim=1, keepdim=True)
    cols = torch.arange(mask.shape[1], device=mask.device)[None]
    return (cols >= mask.shape[1] - n).to(mask.dtype)


def generated_lengths(ids: torch.Tensor, prompt_len: int, eos_token_id: int | None) -> list[int]:
    """Ids each row of :meth:`OpenVLAModel.generate_greedy` generated: up to and including its
    first EOS, else all of them."""
    new = ids[:, prompt_len:]
    n = new.shape[1]
    if eos_token_id is None or n == 0:
        return [n] * ids.shape[0]
    is_eos = (new == eos_token_id).int()
    first = torch.where(is_eos.any(dim=1), is_eos.argmax(dim=1) + 1, torch.full_like(is_eos[:, 0], n))
    return first.tolist()
