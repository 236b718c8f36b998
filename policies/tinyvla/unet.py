"""Diffusion Policy's ``ConditionalUnet1D`` as TinyVLA's ``policy_heads/models/droid_unet_diffusion.py``
builds it, with the release parameter names (the module is ``embed_out`` in the checkpoint).

One deliberate difference, not changing the math:

- Conditioning (mean pool -> LayerNorm -> cat state -> ``combine``) is :meth:`condition`, run once
  per call instead of once per denoising step: the original recomputes the same value 10 times.
  The pool is the mean over each row's *real* tokens (:class:`~.modeling.LlavaPythia` pools), which
  for one unpadded row is the original's ``AdaptiveAvgPool1d(1)``.

The sinusoidal diffusion-step embedding is computed in ``SinusoidalPosEmb.dtype``: bfloat16 by
default, as the original's constructor call hard-codes it (``SinusoidalPosEmb(dsed, torch.bfloat16)``),
then cast to the first Linear's dtype. The original feeds the bf16 embedding to that Linear as is,
which only runs when the head is bf16 (fp32 and fp16 heads raise ``mat1 and mat2 must have the same
dtype``); the cast is the one change that lets it run at other precisions, and a bf16 value cast to
fp32 is exact. ``float32`` there is the ``precision="fp32"`` option of the policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn


class SinusoidalPosEmb(nn.Module):
    """``[sin(t w_i), cos(t w_i)]``, ``w_i = exp(-i log(10000) / (dim/2 - 1))``, computed in ``dtype``.

    ``dtype`` bfloat16 (default) is the original's arithmetic op for op (``arange`` in bf16, ``exp``,
    the product with the integer timestep and ``sin``/``cos`` all in bf16).
    """

    def __init__(self, dim: int, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.dim = dim
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=x.device, dtype=self.dtype) * -scale)
        emb = x[:, None] * freqs[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Downsample1d(nn.Module):
    """Halve the time axis with a stride-2 convolution (Diffusion Policy's)."""
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    """Double the time axis with a transposed convolution (Diffusion Policy's)."""
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, inp: int, out: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(inp, out, kernel_size, padding=kernel_size // 2),
                                   nn.GroupNorm(n_groups, out), nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks with FiLM (per-channel scale and bias from ``cond``) after the first."""

    def __init__(self, inp: int, out: int, cond_dim: int, kernel_size: int = 3, n_groups: int = 8):
        super().__init__()
        self.blocks = nn.ModuleList([Conv1dBlock(inp, out, kernel_size, n_groups),
                                     Conv1dBlock(out, out, kernel_size, n_groups)])
        self.out_channels = out
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, out * 2), nn.Unflatten(-1, (-1, 1)))
        self.residual_conv = nn.Conv1d(inp, out, 1) if inp != out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        embed = self.cond_encoder(cond).reshape(cond.shape[0], 2, self.out_channels, 1)
        out = embed[:, 0] * out + embed[:, 1]
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """The noise-prediction UNet over ``(B, T, action_dim)``; ``T`` must be divisible by 4 (default dims)."""

    def __init__(self, input_dim: int, global_cond_dim: int, diffusion_step_embed_dim: int = 256,
                 down_dims: Sequence[int] = (256, 512, 1024), kernel_size: int = 5, n_groups: int = 8,
                 state_dim: int = 7):
        super().__init__()
        all_dims = [input_dim, *down_dims]
        start_dim = down_dims[0]
        self.global_1d_pool = nn.AdaptiveAvgPool1d(1)  # parameter-free; kept for the original's module tree
        self.norm_after_pool = nn.LayerNorm(global_cond_dim)
        self.combine = nn.Linear(global_cond_dim + state_dim, global_cond_dim)
        dsed = diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(),
                                                    nn.Linear(dsed * 4, dsed))
        cond_dim = dsed + global_cond_dim
        in_out = list(zip(all_dims[:-1], all_dims[1:]))
        mid = all_dims[-1]
        self.mid_modules = nn.ModuleList([ConditionalResidualBlock1D(mid, mid, cond_dim, kernel_size, n_groups)
                                          for _ in range(2)])
        self.down_modules = nn.ModuleList([
            nn.ModuleList([ConditionalResidualBlock1D(d_in, d_out, cond_dim, kernel_size, n_groups),
                           ConditionalResidualBlock1D(d_out, d_out, cond_dim, kernel_size, n_groups),
                           Downsample1d(d_out) if i < len(in_out) - 1 else nn.Identity()])
            for i, (d_in, d_out) in enumerate(in_out)])
        self.up_modules = nn.ModuleList([
            nn.ModuleList([ConditionalResidualBlock1D(d_out * 2, d_in, cond_dim, kernel_size, n_groups),
                           ConditionalResidualBlock1D(d_in, d_in, cond_dim, kernel_size, n_groups),
                           Upsample1d(d_in) if i < len(in_out) - 1 else nn.Identity()])
            for i, (d_in, d_out) in enumerate(reversed(in_out[1:]))])
        self.final_conv = nn.Sequential(Conv1dBlock(start_dim, start_dim, kernel_size),
                                        nn.Conv1d(start_dim, input_dim, 1))

    @property
    def action_dim(self) -> int:
        return int(self.final_conv[1].out_channels)

    @property
    def state_dim(self) -> int:
        return int(self.combine.in_features - self.combine.out_features)

    def condition(self, pooled: torch.Tensor, states: torch.Tensor | None) -> torch.Tensor:
        """``combine(cat(LayerNorm(pooled hidden state), normalised state))``: (B, H)."""
        cond = self.norm_after_pool(pooled)
        if states is not None:
            cond = torch.cat([cond, states.to(cond.dtype)], dim=-1)
        return self.combine(cond)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, cond: torch.Tensor) -> torch.Tensor:
        """Predicted noise ``(B, T, D)`` for ``sample`` ``(B, T, D)`` at diffusion step ``timestep``."""
        x = sample.moveaxis(-1, -2)
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(-1).expand(sample.shape[0])
        step = self.diffusion_step_encoder[0](t).to(self.diffusion_step_encoder[1].weight.dtype)
        for layer in list(self.diffusion_step_encoder)[1:]:
            step = layer(step)
        feature = torch.cat([step, cond.to(step.dtype)], dim=-1)
        skips = []
        for resnet, resnet2, down in self.down_modules:
            x = resnet2(resnet(x, feature), feature)
            skips.append(x)
            x = down(x)
        for mid in self.mid_modules:
            x = mid(x, feature)
        for resnet, resnet2, up in self.up_modules:
            x = torch.cat((x, skips.pop()), dim=1)
            x = up(resnet2(resnet(x, feature), feature))
        return self.final_conv(x).moveaxis(-1, -2)


def unet_kwargs_from_state(state: Mapping[str, torch.Tensor], prefix: str = "embed_out.") -> dict[str, object]:
    """``ConditionalUnet1D`` sizes read off a checkpoint's tensors (the release uses the defaults).

    ``diffusion_step_embed_dim``, ``down_dims`` and ``kernel_size`` are not in ``config.json``; the
    original hard-codes them, so a real checkpoint gives the defaults and a tiny one its own.
    """
    kw: dict[str, object] = {}
    step = state.get(f"{prefix}diffusion_step_encoder.3.weight")
    if step is not None:
        kw["diffusion_step_embed_dim"] = int(step.shape[0])
    dims = []
    while f"{prefix}down_modules.{len(dims)}.0.blocks.0.block.0.weight" in state:
        conv = state[f"{prefix}down_modules.{len(dims)}.0.blocks.0.block.0.weight"]
        dims.append(int(conv.shape[0]))
        kw["kernel_size"] = int(conv.shape[-1])
    if dims:
        kw["down_dims"] = tuple(dims)
    return kw
