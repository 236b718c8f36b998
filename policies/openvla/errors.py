"""Errors raised while loading checkpoints (torch-free, so callers can catch them cheaply)."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint directory is missing a file, has a corrupted file or an unexpected layout.

    The message names the file and says how to fix it (re-download, point at another dir).
    """


class UnnormKeyError(KeyError):
    """``unnorm_key`` is missing or ambiguous; the message lists the available keys."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""
