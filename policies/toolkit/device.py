"""Device and dtype selection for torch policies."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
                                  "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def select_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available else CPU; an explicit CUDA device without CUDA is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device=cpu or auto")
    return dev


def select_dtype(name: str) -> torch.dtype:
    """A dtype by its config name (``fp32``, ``fp16``, ``bf16`` or the torch spelling)."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; valid: {sorted(DTYPES)}") from None
