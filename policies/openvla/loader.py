"""Find, validate and load OpenVLA weights from a local directory (HF release or Prismatic run).

HF release layout (``openvla/openvla-7b`` and its fine-tunes)::

    config.json  model.safetensors.index.json  model-0000k-of-0000n.safetensors
    tokenizer.json  tokenizer.model  tokenizer_config.json  special_tokens_map.json
    preprocessor_config.json  [dataset_statistics.json]

A single ``model.safetensors`` (no index) is accepted too. Prismatic training run layout::

    <run>/checkpoints/latest-checkpoint.pt   {"model": {"projector", "llm_backbone", "vision_backbone"}}
    <run>/dataset_statistics.json

whose keys are converted as ``convert_openvla_weights_to_hf.py`` does (``llm.`` ->
``language_model.``, ``projector.0/2/4`` -> ``fc1/2/3``, ``dino_featurizer`` -> ``featurizer``
with ``gamma`` -> ``scale_factor``, ``siglip_featurizer`` -> ``fused_featurizer``). A run has
no HF config/tokenizer/processor; those come from ``base_checkpoint`` (an HF-format dir).

Everything is loaded without pickle: safetensors, JSON, and ``torch.load(weights_only=True)``.
The model is built on the ``meta`` device and the checkpoint tensors are assigned in place, so
a 7B model never gets a random initialisation pass or a second copy in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from vla_gym.policies.openvla.config import OpenVLAConfig
from vla_gym.policies.openvla.errors import CheckpointError
from vla_gym.policies.toolkit.safe_load import load_safetensors, read_json

PRISMATIC_CKPT = Path("checkpoints") / "latest-checkpoint.pt"
PROJECTOR_KEYS = {
    "projector.0.": "projector.fc1.",
    "projector.2.": "projector.fc2.",
    "projector.4.": "projector.fc3.",
}




def is_prismatic_run(path: Path) -> bool:
    """A Prismatic training run directory (``checkpoints/latest-checkpoint.pt``)."""
    return (path / PRISMATIC_CKPT).is_file()


def load_config(path: Path) -> OpenVLAConfig:
    """Read ``config.json`` and let ``dataset_statistics.json`` override ``norm_stats``.

    The reference eval does the same (``vla.norm_stats = json.load(dataset_statistics.json)``).
    """
    raw = read_json(path / "config.json", "the OpenVLA model config")
    stats_file = path / "dataset_statistics.json"
    if stats_file.is_file():
        raw = {**raw, "norm_stats": read_json(stats_file, "action statistics")}
    return OpenVLAConfig.from_dict(raw, source=str(path / "config.json"))


def load_hf_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF-format checkpoint (sharded with an index, or one file)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, "the shard index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index} has no `weight_map`; re-download it")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(load_safetensors(path / shard))
        missing = sorted(set(weight_map) - set(state))
        if missing:
            raise CheckpointError(
                f"{index} lists {len(missing)} tensors not found in the shards, e.g. {missing[:5]}"
            )
        return state
    single = path / "model.safetensors"
    if single.is_file():
        return load_safetensors(single)
    bins = sorted(p.name for p in path.glob("*.bin"))
    hint = f" (found {bins}: pickled .bin weights are refused; convert them to safetensors)" if bins else ""
    raise CheckpointError(f"no model.safetensors.index.json or model.safetensors in {path}{hint}")


def convert_prismatic_state_dict(
    model: dict[str, dict[str, torch.Tensor]], fused: bool
) -> dict[str, torch.Tensor]:
    """Map a Prismatic ``{"projector", "llm_backbone", "vision_backbone"}`` dict to HF names."""
    for part in ("projector", "llm_backbone", "vision_backbone"):
        if part not in model:
            raise CheckpointError(
                f"Prismatic checkpoint lacks '{part}' (has {sorted(model)}); an OpenVLA run saves all three"
            )
    out: dict[str, torch.Tensor] = {}
    for key, value in model["projector"].items():
        prefix = next((p for p in PROJECTOR_KEYS if key.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(f"unexpected projector key {key!r} in Prismatic checkpoint")
        out[PROJECTOR_KEYS[prefix] + key[len(prefix) :]] = value
    for key, value in model["llm_backbone"].items():
        if not key.startswith("llm."):
            raise CheckpointError(f"unexpected llm_backbone key {key!r} (expected 'llm.' prefix)")
        out["language_model." + key[len("llm.") :]] = value
    for key, value in model["vision_backbone"].items():
        if not fused and key.startswith("featurizer."):
            out["vision_backbone." + key] = value
        elif key.startswith("dino_featurizer."):
            if key.endswith(".gamma"):
                key = key[: -len(".gamma")] + ".scale_factor"
            out["vision_backbone.featurizer." + key[len("dino_featurizer.") :]] = value
        elif key.startswith("siglip_featurizer."):
            out["vision_backbone.fused_featurizer." + key[len("siglip_featurizer.") :]] = value
        else:
            raise CheckpointError(f"unexpected vision_backbone key {key!r} in Prismatic checkpoint")
    return out


def load_prismatic_state_dict(run_dir: Path, fused: bool) -> dict[str, torch.Tensor]:
    """Read ``checkpoints/latest-checkpoint.pt`` safely (``weights_only=True``) and convert keys."""
    file = run_dir / PRISMATIC_CKPT
    try:
        blob = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for non-tensor objects, RuntimeError for truncation
        raise CheckpointError(
            f"{file} could not be loaded with torch.load(weights_only=True) ({type(exc).__name__}: {exc}). "
            "It is corrupted or contains arbitrary Python objects, which vla_gym refuses to unpickle."
        ) from exc
    if not isinstance(blob, dict) or "model" not in blob:
        raise CheckpointError(f"{file}: expected a dict with a 'model' entry, got keys {list(blob)[:5]}")
    return convert_prismatic_state_dict(blob["model"], fused)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True, assign=True)`` with a readable key diff on mismatch."""
    expected = set(model.state_dict().keys())
    got = set(state)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: parameter names do not match the OpenVLA architecture built from config.json: "
            f"{len(missing)} missing (e.g. {missing[:5]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})"
        )
    shapes = model.state_dict()
    bad = [k for k in sorted(got) if tuple(state[k].shape) != tuple(shapes[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{source}: {len(bad)} tensors have the wrong shape, e.g. {k}: checkpoint "
            f"{tuple(state[k].shape)} vs config {tuple(shapes[k].shape)}; config.json and weights disagree"
        )
    model.load_state_dict(state, strict=True, assign=True)


def build_on_meta(factory: Callable[[], nn.Module]) -> nn.Module:
    """Instantiate a module without allocating or initialising its weights."""
    with torch.device("meta"):
        return factory()


def materialize_buffers(model: nn.Module) -> None:
    """Recreate non-persistent buffers (Llama rotary ``inv_freq``) left on ``meta`` after assign-loading."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    for name, module in model.named_modules():
        if isinstance(module, LlamaRotaryEmbedding):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            with torch.device("cpu"):
                setattr(parent, child, LlamaRotaryEmbedding(config=module.config))
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"tensors not provided by the checkpoint and not rebuildable: {leftover[:5]}")
