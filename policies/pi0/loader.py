"""Weights of an openpi-PyTorch or LeRobot pi0/pi0.5 checkpoint into :class:`~vla_gym.policies.pi0.modeling.Pi0Model`.

Key handling, each rule from a reference and nothing looser (the load itself is strict):

- LeRobot prefixes every key with ``model.`` (``PI0Policy.from_pretrained``): stripped; a file
  mixing prefixed and bare keys is refused.
- Embeddings: with PaliGemma's tied embeddings ``safetensors.save_model`` keeps only
  ``paligemma.lm_head.weight``, so openpi conversions and older LeRobot files lack
  ``language_model.embed_tokens.weight``: it is the same tensor (LeRobot
  ``_fix_pytorch_state_dict_keys``). LeRobot 0.6 (transformers 5) saves both, untied; then the
  embedding is used (lm_head is never applied: pi0 generates no text) and the file's lm_head ignored.
- ``gemma_expert.lm_head.weight``: the references' unused expert head (GemmaForCausalLM without
  embeddings), written by ``save_model``; dropped (it is not in the network).
- LeRobot pi0 ``time_mlp_*`` is renamed to ``action_time_mlp_*`` (LeRobot does the same); a
  pi0.5 file's plain expert norm ``.weight`` keys next to their AdaRMS ``dense`` keys are
  dropped (LeRobot skips them when adaRMS is on).
- Old LeRobot naming (``paligemma.language_model.model.*``, transformers < 4.52, before
  LeRobot PR #1910) is refused with a message: its layout differs, renaming it is not a rule
  either reference states for inference.

Sizes come from the tensor shapes (``dims_from_state_dict``), cross-checked against the variants
named in ``config.json`` (a mismatch warns: tiny test checkpoints carry the real config values).
"""

from __future__ import annotations

import logging
import re
import warnings

import torch

from vla_gym.policies.pi0.config import Pi0Checkpoint
from vla_gym.policies.pi0.modeling import (
    EMBED_KEY,
    EXPERT,
    EXPERT_LM_HEAD_KEY,
    LM_HEAD_KEY,
    Pi0Dims,
    Pi0Model,
    check_variant,
    dims_from_state_dict,
)
from vla_gym.policies.toolkit.errors import CheckpointError
from vla_gym.policies.toolkit.safe_load import load_safetensors

log = logging.getLogger(__name__)

LEROBOT_PREFIX = "model."
OLD_LEROBOT = ("paligemma_with_expert.paligemma.language_model.model.", "paligemma_with_expert.paligemma.vision_tower.")
_EXPERT_PLAIN_NORM = re.compile(re.escape(EXPERT) + r"(layers\.\d+\.(input_layernorm|post_attention_layernorm)|norm)\.weight$")


def strip_prefix(state: dict[str, torch.Tensor], layout: str, source: str) -> dict[str, torch.Tensor]:
    """LeRobot's ``model.`` prefix removed (all keys or none: a mixed file is refused)."""
    prefixed = sum(k.startswith(LEROBOT_PREFIX) for k in state)
    if prefixed == 0:
        return dict(state)  # openpi names (LeRobot adds the prefix on load when absent)
    if layout == "openpi":
        raise CheckpointError(f"{source}: keys carry LeRobot's 'model.' prefix but config.json is openpi's "
                              "(no 'type'); use the LeRobot config.json that came with these weights")
    if prefixed != len(state):
        raise CheckpointError(f"{source}: some keys have the 'model.' prefix and some do not; the file is damaged")
    return {k[len(LEROBOT_PREFIX):]: v for k, v in state.items()}


def canonical_state(state: dict[str, torch.Tensor], ckpt: Pi0Checkpoint) -> dict[str, torch.Tensor]:
    """openpi-PI0Pytorch-named tensors, ready for a strict load (see the module docstring)."""
    source = str(ckpt.weights)
    state = strip_prefix(state, ckpt.layout, source)
    old = sorted(k for k in state if k.startswith(OLD_LEROBOT))
    if old:
        raise CheckpointError(
            f"{source} uses the pre-Oct-2025 LeRobot naming ({old[0]!r}: transformers < 4.52 PaliGemma layout). "
            "Load and re-save it with LeRobot >= 0.4 (PI0Policy.from_pretrained + save_pretrained), or use the "
            "current release of the checkpoint")
    state.pop(EXPERT_LM_HEAD_KEY, None)
    if EMBED_KEY in state:  # the embedding is what the prefix reads; lm_head is never applied
        state[LM_HEAD_KEY] = state[EMBED_KEY]
    elif LM_HEAD_KEY in state:  # save_model dropped the tied embed_tokens
        state[EMBED_KEY] = state[LM_HEAD_KEY]
    if not ckpt.pi05:
        for name in ("time_mlp_in", "time_mlp_out"):
            for leaf in ("weight", "bias"):
                old_key, new_key = f"{name}.{leaf}", f"action_{name}.{leaf}"
                if old_key in state:
                    if new_key in state:
                        raise CheckpointError(f"{source} holds both {old_key} and {new_key}")
                    state[new_key] = state.pop(old_key)
    else:
        for key in [k for k in state if _EXPERT_PLAIN_NORM.match(k)]:
            if key[: -len(".weight")] + ".dense.weight" in state:
                del state[key]
    return state


def load_state(ckpt: Pi0Checkpoint) -> dict[str, torch.Tensor]:
    """The canonical state dict of the checkpoint's ``model.safetensors`` (CPU, stored dtypes)."""
    return canonical_state(load_safetensors(ckpt.weights), ckpt)


def model_dims(state: dict[str, torch.Tensor], ckpt: Pi0Checkpoint) -> Pi0Dims:
    """Sizes from the tensors; a warning for each named variant they do not match."""
    dims = dims_from_state_dict(state, pi05=ckpt.pi05, action_horizon=ckpt.action_horizon)
    for gemma, variant in ((dims.paligemma, ckpt.variants[0]), (dims.expert, ckpt.variants[1])):
        message = check_variant(gemma, variant)
        if message is not None:
            warnings.warn(f"{ckpt.path}: {message}", stacklevel=2)
    return dims


def build_model(ckpt: Pi0Checkpoint) -> Pi0Model:
    """The network with the checkpoint's weights, strictly (every key used, none missing)."""
    state = load_state(ckpt)
    dims = model_dims(state, ckpt)
    with torch.device("meta"):
        model = Pi0Model(dims)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.weights} does not match the {ckpt.variant} network: {exc}") from exc
    _retie(model)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"{ckpt.weights}: no values for {leftover[:5]} (and {max(0, len(leftover) - 5)} more)")
    return model.eval()


def _retie(model: Pi0Model) -> None:
    """``assign=True`` replaces Parameters one by one; make lm_head the embedding Parameter again."""
    paligemma = model.paligemma_with_expert.paligemma
    paligemma.lm_head.weight = paligemma.model.language_model.embed_tokens.weight
