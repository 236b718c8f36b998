"""LLaVA-Pythia with the diffusion head, as TinyVLA's ``LlavaPythiaForCausalLM`` (droid_diffusion).

Module tree and parameter names are the release's: ``gpt_neox.*`` (``transformers.GPTNeoXModel``)
owning ``gpt_neox.vision_tower.vision_model.*`` (CLIP ViT) and ``gpt_neox.mm_projector.*``, and
``embed_out.*`` = the :class:`~.unet.ConditionalUnet1D` (the original re-uses GPT-NeoX's LM-head name).

Per call (``llava_arch.prepare_inputs_labels_for_multimodal`` + ``forward_diffusion_head``):
each camera through the tower (hidden state of ``mm_vision_select_layer``, CLS dropped with
``patch``) and the projector; cameras concatenated along the token axis (``token_cat``) and
spliced in at the prompt's ``<image>`` position; GPT-NeoX; the last hidden state (after the final
LayerNorm) mean-pooled over the sequence conditions the UNet.

Batching: rows are *right*-padded, so every real token keeps the position it has in a B = 1 call
(GPT-NeoX is causal, so padding after a row never reaches its real tokens), and each row is
pooled over its own real tokens only.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionModel, GPTNeoXModel

from vla_gym.policies.tinyvla.config import TinyVLAConfig
from vla_gym.policies.tinyvla.unet import ConditionalUnet1D
from vla_gym.policies.toolkit.errors import CheckpointError

IMAGE_TOKEN_INDEX = -200  # llava_pythia/constants.py


class CLIPVisionTower(nn.Module):
    """``vision_tower.vision_model`` = CLIP ViT; features = hidden state ``select_layer`` (CLS dropped for ``patch``)."""

    def __init__(self, vision_config: Any, select_layer: int = -2, select_feature: str = "patch"):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise CheckpointError(f"mm_vision_select_feature={select_feature!r}; expected patch or cls_patch")
        n = vision_config.num_hidden_layers
        index = select_layer if select_layer >= 0 else n + 1 + select_layer  # into [embeddings, layer 1..n]
        if not 0 <= index <= n:
            raise CheckpointError(f"mm_vision_select_layer={select_layer} is out of range for {n} CLIP layers")
        self.vision_model = CLIPVisionModel(vision_config)
        self.n_layers = index
        self.select_feature = select_feature

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, P, C): what ``output_hidden_states=True`` would give at the selected layer."""
        vm = self.vision_model
        x = vm.pre_layrnorm(vm.embeddings(pixels.to(vm.embeddings.patch_embedding.weight.dtype)))
        for layer in vm.encoder.layers[: self.n_layers]:
            x = layer(x, None)
        return x[:, 1:] if self.select_feature == "patch" else x


def build_projector(kind: str, mm_hidden: int, hidden: int) -> nn.Module:
    """``multimodal_projector/builder.py``: ``linear``, ``mlp{N}x_gelu`` or ``identity``."""
    if kind == "linear":
        return nn.Linear(mm_hidden, hidden)
    match = re.match(r"^mlp(\d+)x_gelu$", kind)
    if match:
        mods: list[nn.Module] = [nn.Linear(mm_hidden, hidden)]
        for _ in range(1, int(match.group(1))):
            mods += [nn.GELU(), nn.Linear(hidden, hidden)]
        return nn.Sequential(*mods)
    if kind == "identity":
        return nn.Identity()
    raise CheckpointError(f"unknown mm_projector_type {kind!r} (linear, mlpNx_gelu or identity)")


class LlavaPythiaModel(GPTNeoXModel):
    """GPT-NeoX that also owns the vision tower and projector (``LLavaPythiaModel`` of the release)."""

    def __init__(self, cfg: TinyVLAConfig):
        super().__init__(cfg.llm_config())
        self.vision_tower = CLIPVisionTower(cfg.vision_config(), cfg.select_layer, cfg.select_feature)
        self.mm_projector = build_projector(cfg.projector_type, cfg.mm_hidden_size, cfg.hidden_size)


class LlavaPythia(nn.Module):
    """The whole TinyVLA policy network: ``gpt_neox`` (VLM) + ``embed_out`` (diffusion UNet)."""

    def __init__(self, cfg: TinyVLAConfig, unet_kwargs: dict[str, Any] | None = None):
        super().__init__()
        self.cfg = cfg
        self.gpt_neox = LlavaPythiaModel(cfg)
        self.embed_out = ConditionalUnet1D(input_dim=cfg.action_dim, global_cond_dim=cfg.hidden_size,
                                           state_dim=cfg.state_dim, **(unet_kwargs or {}))

    @property
    def dtype(self) -> torch.dtype:
        return self.gpt_neox.embed_in.weight.dtype

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, n_cams, 3, S, S) -> (B, n_cams * P, H): per camera tower + projector, ``token_cat``."""
        b, n = pixels.shape[:2]
        feats = self.gpt_neox.vision_tower(pixels.flatten(0, 1))
        feats = self.gpt_neox.mm_projector(feats.to(self.dtype) if feats.dtype != self.dtype else feats)
        if n > 1 and self.cfg.concat != "token_cat":
            raise CheckpointError(f"{n} cameras need concat=token_cat; the checkpoint says {self.cfg.concat!r}")
        return feats.reshape(b, n * feats.shape[1], feats.shape[2])

    def splice(self, input_ids: list[torch.Tensor], image_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings with each row's images at its ``<image>`` id, right-padded: (B, L, H), mask (B, L)."""
        embed = self.gpt_neox.embed_in
        rows = []
        for ids, feats in zip(input_ids, image_feats):
            where = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten()
            if where.numel() != 1:
                raise ValueError(f"a TinyVLA prompt holds exactly one <image>; got {where.numel()}")
            i = int(where[0])
            rows.append(torch.cat([embed(ids[:i]), feats.to(embed.weight.dtype), embed(ids[i + 1:])]))
        width = max(r.shape[0] for r in rows)
        out = rows[0].new_zeros((len(rows), width, rows[0].shape[1]))
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=out.device)
        for r, row in enumerate(rows):
            out[r, : row.shape[0]] = row
            mask[r, : row.shape[0]] = 1
        return out, mask

    def pooled_hidden(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """GPT-NeoX last hidden state (final LayerNorm applied), mean over each row's real tokens: (B, H)."""
        padded = bool((mask == 0).any())
        hidden = self.gpt_neox(inputs_embeds=embeds, attention_mask=mask if padded else None).last_hidden_state
        lengths = mask.sum(dim=1).tolist()
        return torch.stack([hidden[r, :n].mean(dim=0) for r, n in enumerate(lengths)])
