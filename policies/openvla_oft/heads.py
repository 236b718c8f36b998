"""OpenVLA-OFT's extra modules under their released parameter names.

- ``L1RegressionActionHead``: ``model.{layer_norm1, fc1, mlp_resnet_blocks.{i}.ffn.{0,1},
  layer_norm2, fc2}``; input is the last hidden state of the ``chunk x action_dim`` action
  positions, regrouped to one ``action_dim * llm_dim`` vector per chunk step.
- ``ProprioProjector``: ``fc1`` (proprio_dim -> llm_dim), GELU, ``fc2``.

Files: ``action_head--<step>_checkpoint.pt`` and ``proprio_projector--<step>_checkpoint.pt``
(``torch.save`` of the state dict, keys prefixed ``module.`` when trained with DDP).
"""

from __future__ import annotations

import torch
from torch import nn


class MLPResNetBlock(nn.Module):
    """Pre-LayerNorm feed-forward block with a residual connection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x + ffn(x)``."""
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm -> fc1 -> ReLU -> blocks -> LayerNorm -> fc2."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList([MLPResNetBlock(hidden_dim) for _ in range(num_blocks)])
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., input_dim) -> (..., output_dim)."""
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """Continuous action chunk from the action positions' hidden states (OFT, L1 loss)."""

    def __init__(self, llm_dim: int, action_dim: int = 7, num_actions_chunk: int = 8) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.num_actions_chunk = num_actions_chunk
        self.model = MLPResNet(
            num_blocks=2, input_dim=llm_dim * action_dim, hidden_dim=llm_dim, output_dim=action_dim
        )

    def forward(self, action_hidden: torch.Tensor) -> torch.Tensor:
        """(B, chunk * action_dim, D) -> (B, chunk, action_dim), normalised to about [-1, 1]."""
        b = action_hidden.shape[0]
        return self.model(action_hidden.reshape(b, self.num_actions_chunk, -1))


class ProprioProjector(nn.Module):
    """Project the normalised proprio vector to one LLM token."""

    def __init__(self, llm_dim: int, proprio_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act_fn1 = nn.GELU()

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        """(B, proprio_dim) -> (B, llm_dim)."""
        return self.fc2(self.act_fn1(self.fc1(proprio)))
