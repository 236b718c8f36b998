"""SigLIP vision tower of PaliGemma (So400m/14 in pi0/pi0.5), written out so its names and numerics are ours.

Parameter names are those of ``transformers``' ``SiglipVisionModel`` without the pooling head
(PaliGemma sets ``vision_use_head=False``), so a module ``vision_tower = SiglipVisionTower(...)``
holds ``vision_tower.vision_model.{embeddings.patch_embedding, embeddings.position_embedding,
encoder.layers.N.{self_attn.{q,k,v,out}_proj, layer_norm1, layer_norm2, mlp.fc1, mlp.fc2},
post_layernorm}``. Numerics as transformers' eager SigLIP: LayerNorm eps 1e-6, tanh-GELU MLP,
softmax in fp32, attention scale ``head_dim ** -0.5``. The output is the last hidden state after
``post_layernorm`` (one token per patch, no pooling), as ``PaliGemmaModel.get_image_features``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-6  # SiglipVisionConfig.layer_norm_eps


class SiglipAttention(nn.Module):
    """Multi-head self attention with biased q/k/v/out projections, no mask (all patches see all)."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"SigLIP width {width} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        shape = (b, n, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        weights = torch.matmul(q, k.transpose(2, 3)) * self.scale
        weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, n, -1)
        return self.out_proj(out)


class SiglipMLP(nn.Module):
    """fc1 -> tanh-approximated GELU (``gelu_pytorch_tanh``) -> fc2."""

    def __init__(self, width: int, mlp_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, mlp_dim: int, num_heads: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.self_attn = SiglipAttention(width, num_heads)
        self.layer_norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = SiglipMLP(width, mlp_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    """The stack of encoder layers (``encoder.layers.N``)."""

    def __init__(self, width: int, depth: int, mlp_dim: int, num_heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(width, mlp_dim, num_heads) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class SiglipEmbeddings(nn.Module):
    """Non-overlapping patch convolution plus a learned position embedding per patch."""

    def __init__(self, width: int, patch_size: int, image_size: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"SigLIP image size {image_size} is not a multiple of patch size {patch_size}")
        self.patch_size = patch_size
        self.image_size = image_size
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.position_embedding = nn.Embedding(self.num_patches, width)

    def forward(self, pixels: Tensor) -> Tensor:
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"images must be {self.image_size}x{self.image_size} (the checkpoint's position embedding), "
                f"got {tuple(pixels.shape[-2:])}"
            )
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixels.to(weight.dtype)).flatten(2).transpose(1, 2)
        return patches + self.position_embedding.weight[None].to(patches.dtype)


class SiglipVisionModel(nn.Module):
    """``vision_model``: embeddings -> encoder -> ``post_layernorm``."""

    def __init__(self, width: int, depth: int, mlp_dim: int, num_heads: int, patch_size: int, image_size: int):
        super().__init__()
        self.embeddings = SiglipEmbeddings(width, patch_size, image_size)
        self.encoder = SiglipEncoder(width, depth, mlp_dim, num_heads)
        self.post_layernorm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

    def forward(self, pixels: Tensor) -> Tensor:
        x = self.embeddings(pixels)
        # The encoder runs in the dtype of its norms (bf16 in openpi's precision policy, which keeps only
        # the patch/position embeddings in fp32; fp32 in LeRobot's, which keeps the whole tower fp32).
        x = x.to(self.post_layernorm.weight.dtype)
        return self.post_layernorm(self.encoder(x))


class SiglipVisionTower(nn.Module):
    """``vision_tower``: only wraps ``vision_model`` so the parameter names match transformers'."""

    def __init__(self, width: int, depth: int, mlp_dim: int, num_heads: int, patch_size: int, image_size: int):
        super().__init__()
        self.vision_model = SiglipVisionModel(width, depth, mlp_dim, num_heads, patch_size, image_size)

    def forward(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, num_patches, width)."""
        return self.vision_model(pixels)
