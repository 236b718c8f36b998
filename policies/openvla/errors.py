"""Errors raised while loading checkpoints (torch-free, so callers can catch them cheaply)."""

from __future__ import annotations

from vla_gym.policies.toolkit.errors import CheckpointError

__all__ = ["CheckpointError", "UnnormKeyError"]


class UnnormKeyError(KeyError):
    """``unnorm_key`` is missing or ambiguous; the message lists the available keys."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""
