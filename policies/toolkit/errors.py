"""Errors of checkpoint and stats loading (torch-free, so callers can catch them cheaply)."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint directory is missing a file, has a corrupted file or an unexpected layout.

    The message names the file and says how to fix it (re-download, point at another dir).
    """


class NormStatsError(ValueError):
    """Normalisation statistics of the wrong kind, shape or content for the policy family."""
