"""Gemma decoder blocks for pi0/pi0.5: PaliGemma's Gemma-2B prefix and the Gemma-300M action expert.

Written here instead of using ``transformers.GemmaModel`` because pi0 needs what stock Gemma
lacks (openpi patches site-packages for it; LeRobot subclasses it): AdaRMS-conditioned norms with
gated residuals (pi0.5 expert), no input scaling inside the stack (the caller scales language
embeddings by ``sqrt(width)``), and a prefix KV cache that the denoising steps read without
extending. Numerics follow transformers' eager Gemma, which both references run:

- RMSNorm ``x * rsqrt(mean(x^2) + 1e-6) * (1 + w)`` with the variance and product in fp32;
  AdaRMS ``norm(x) * (1 + scale) + shift`` and a ``gate`` from ``dense(cond)`` (``scale, shift,
  gate`` chunks), residual ``x + y * gate`` (openpi ``_gated_residual``).
- RoPE (theta 10000, rotate-half) with cos/sin computed in fp32 then cast to the activations'
  dtype; positions are supplied by the caller (``cumsum(mask) - 1``).
- Grouped-query attention (KV heads repeated), scores ``(q @ k^T) * head_dim**-0.5`` plus an
  additive mask (``MASK_VALUE`` where not allowed), softmax in fp32, cast back.
- MLP ``down(gelu_tanh(gate(x)) * up(x))``.

Parameter names are transformers' (``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``,
``input_layernorm``, ``post_attention_layernorm``; AdaRMS norms hold ``dense`` instead of
``weight``), so openpi's and LeRobot's state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

RMS_EPS = 1e-6
ROPE_THETA = 10_000.0
MASK_VALUE = -2.3819763e38  # openpi / LeRobot OPENPI_ATTENTION_MASK_VALUE

KV = tuple[Tensor, Tensor]


def input_dtype(linear: nn.Module, default: torch.dtype) -> torch.dtype:
    """Dtype a Linear's input must have: its weight's if floating, else ``default`` (8-bit weights)."""
    weight = getattr(linear, "weight", None)
    if weight is not None and weight.is_floating_point():
        return weight.dtype
    return default


class RMSNorm(nn.Module):
    """Gemma RMSNorm; with ``cond_dim`` the AdaRMS variant (pi0.5 expert), which also returns a gate."""

    def __init__(self, dim: int, cond_dim: int | None = None) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        if cond_dim is None:
            self.weight = nn.Parameter(torch.zeros(dim))
        else:
            self.dense = nn.Linear(cond_dim, 3 * dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Return ``(normed, gate)``; ``gate`` is None without conditioning."""
        var = torch.mean(torch.square(x.float()), dim=-1, keepdim=True)
        normed = x.float() * torch.rsqrt(var + RMS_EPS)
        if self.cond_dim is None:
            return (normed * (1.0 + self.weight.float())).to(x.dtype), None
        if cond is None:
            raise ValueError("this AdaRMS norm needs the time conditioning `cond`")
        modulation = self.dense(cond.to(input_dtype(self.dense, cond.dtype)))
        scale, shift, gate = modulation[:, None, :].chunk(3, dim=-1)
        normed = normed * (1.0 + scale.float()) + shift.float()
        return normed.to(x.dtype), gate.to(x.dtype)


def gated_residual(x: Tensor, y: Tensor, gate: Tensor | None) -> Tensor:
    """``x + y`` or, with AdaRMS, ``x + y * gate``."""
    return x + y if gate is None else x + y * gate


def rope_cos_sin(positions: Tensor, head_dim: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin tables (B, L, head_dim) for integer positions (B, L), as GemmaRotaryEmbedding."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (ROPE_THETA**exponent)
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, heads, L, head_dim) by the (B, L, head_dim) tables."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + _rotate_half(x) * sin


class GemmaAttention(nn.Module):
    """Projections of one Gemma attention block (the attention itself is :func:`attend`)."""

    def __init__(self, width: int, num_heads: int, num_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.q_proj = nn.Linear(width, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(width, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(width, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, width, bias=False)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Eager GQA attention. q (B,H,S,D), k/v (B,KV,T,D), additive mask (B,1,S,T) -> (B,S,H*D)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * (q.shape[-1] ** -0.5)
    # The mask stays float32, so the sum is float32 for bf16/fp16 scores (type promotion), as in both
    # references; MASK_VALUE would be -inf in fp16 and turn fully masked (padding) rows into NaN.
    scores = scores + mask.float()
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.matmul(weights, v)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


class GemmaMLP(nn.Module):
    """GeGLU feed-forward with tanh-approximated GELU."""

    def __init__(self, width: int, mlp_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Gated GELU (tanh) MLP: ``down(gelu(gate(x)) * up(x))``."""
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaLayer(nn.Module):
    """One decoder layer; ``cond_dim`` set = AdaRMS norms and gated residuals (pi0.5 expert)."""

    def __init__(
        self,
        width: int,
        mlp_dim: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(width, cond_dim)
        self.self_attn = GemmaAttention(width, num_heads, num_kv_heads, head_dim)
        self.post_attention_layernorm = RMSNorm(width, cond_dim)
        self.mlp = GemmaMLP(width, mlp_dim)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor,
        cond: Tensor | None = None,
        past: KV | None = None,
        need_output: bool = True,
    ) -> tuple[Tensor | None, KV]:
        """Run the layer on ``x`` (B, S, W), attending to ``past`` keys/values first when given.

        Returns the new hidden states (None when ``need_output`` is False: the prefix's last
        layer only has to provide its keys/values) and this block's own rotated (k, v), which the
        prefix pass keeps as the KV cache.
        """
        b, s, _ = x.shape
        attn = self.self_attn
        h, gate = self.input_layernorm(x, cond)
        q = attn.q_proj(h).view(b, s, attn.num_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(b, s, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, s, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        if not need_output:
            return None, (k, v)
        out = attn.o_proj(attend(q, keys.to(q.dtype), values.to(q.dtype), mask))
        x = gated_residual(x, out, gate)
        h, gate = self.post_attention_layernorm(x, cond)
        x = gated_residual(x, self.mlp(h), gate)
        return x, (k, v)


class GemmaStack(nn.Module):
    """``layers`` + final ``norm`` (+ ``embed_tokens`` for PaliGemma's language model)."""

    def __init__(
        self,
        width: int,
        depth: int,
        mlp_dim: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        vocab_size: int | None = None,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        if vocab_size is not None:
            self.embed_tokens = nn.Embedding(vocab_size, width)
        self.layers = nn.ModuleList(
            GemmaLayer(width, mlp_dim, num_heads, num_kv_heads, head_dim, cond_dim) for _ in range(depth)
        )
        self.norm = RMSNorm(width, cond_dim)

    def prefill(self, x: Tensor, positions: Tensor, mask: Tensor) -> list[KV]:
        """Run the prefix through all layers and return each layer's (k, v): the KV cache.

        The final norm and the last layer's attention output / MLP are skipped: the prefix's
        hidden states feed nothing but the cache.
        """
        cos, sin = rope_cos_sin(positions, self.head_dim, x.dtype)
        cache = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            out, kv = layer(x, cos, sin, mask, need_output=i < last)
            cache.append(kv)
            if out is not None:
                x = out
        return cache

    def decode(self, x: Tensor, positions: Tensor, mask: Tensor, cache: list[KV], cond: Tensor | None) -> Tensor:
        """Run suffix tokens attending to ``cache`` (not extended) and themselves; final-normed states."""
        cos, sin = rope_cos_sin(positions, self.head_dim, x.dtype)
        for layer, past in zip(self.layers, cache, strict=True):
            x, _ = layer(x, cos, sin, mask, cond=cond, past=past)
        out, _ = self.norm(x, cond)
        return out
