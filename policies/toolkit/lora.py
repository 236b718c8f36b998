"""Folding unmerged LoRA weights into their base layers: ``W + B @ A * scaling``.

``scaling`` is ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA), read from the adapter's
own ``adapter_config.json`` (:func:`lora_scaling_from_config`) -- TinyVLA ships alpha 256 with
r 64, so no family-wide constant is right. A family whose reference fixes alpha in code
(OpenVLA-OFT's FiLM vision LoRA: ``alpha = min(r, 16)``) passes its own function of r.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from vla_gym.policies.toolkit.errors import CheckpointError

LORA_A, LORA_B, BASE = ".lora_A.default.weight", ".lora_B.default.weight", ".base_layer."


def lora_scaling_from_config(adapter_dir: Path) -> Callable[[int], float]:
    """``r -> scaling`` from a peft ``adapter_config.json`` (``lora_alpha``, ``r``, ``use_rslora``)."""
    file = Path(adapter_dir) / "adapter_config.json"
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; a LoRA adapter needs its config for alpha and r")
    try:
        cfg = json.loads(file.read_text())
        alpha, rank = float(cfg["lora_alpha"]), int(cfg["r"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{file}: needs numeric 'lora_alpha' and 'r' ({type(exc).__name__}: {exc})") from exc
    if rank <= 0:
        raise CheckpointError(f"{file}: r must be positive, got {rank}")
    rslora = bool(cfg.get("use_rslora", False))

    def scaling(r: int) -> float:
        if r != rank:
            raise CheckpointError(f"{file} says r={rank} but a LoRA layer has rank {r}")
        return alpha / math.sqrt(r) if rslora else alpha / r

    return scaling


def merge_lora_state(state: dict[str, Any], scaling: Callable[[int], float], source: str) -> dict[str, Any]:
    """Fold peft LoRA entries (``base_layer`` + ``lora_A/B.default``) of a state dict into plain weights.

    Works for Linear and Conv2d LoRA layers (peft's conv ``lora_B`` is 1x1); ``scaling(r)``
    gives the factor for a layer of rank r.
    """
    import torch

    out: dict[str, Any] = {}
    layers = {k[: -len(LORA_A)] for k in state if k.endswith(LORA_A)}
    for key, value in state.items():
        if key.endswith((LORA_A, LORA_B)):
            continue
        if BASE in key:
            layer, _, leaf = key.partition(BASE)
            if layer not in layers:
                raise CheckpointError(f"{source}: {key} has no matching {layer}{LORA_A}")
            out[f"{layer}.{leaf}"] = value
        else:
            out[key] = value
    for layer in sorted(layers):
        try:
            a = state[layer + LORA_A].float()
            b = state[layer + LORA_B].float()
            base = state[f"{layer}{BASE}weight"]
        except KeyError as exc:
            raise CheckpointError(f"{source}: incomplete LoRA entries for {layer} (missing {exc})") from exc
        r = a.shape[0]
        delta = torch.einsum("or,r...->o...", b.reshape(b.shape[0], r), a) * scaling(r)
        if delta.shape != base.shape:
            raise CheckpointError(
                f"{source}: LoRA of {layer} has delta shape {tuple(delta.shape)} vs weight {tuple(base.shape)}"
            )
        out[f"{layer}.weight"] = (base.float() + delta).to(base.dtype)
    return out
