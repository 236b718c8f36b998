"""Loading a TinyVLA checkpoint as ``llava_pythia/model/builder.py load_pretrained_model`` does, pickle-free.

LoRA run (``policy.checkpoint`` = the dir holding ``adapter_config.json``, e.g. ``<run>/checkpoint-N``,
plus ``policy.model_base`` = the base VLM dir):

1. ``config.json`` with the action keys: the checkpoint dir's own if it has them, else its
   parent's (the original always reads the parent: ``checkpoint-N/..``).
2. The tokenizer from the base dir; the base VLM weights (``model.safetensors``, sharded or
   ``pytorch_model.bin``). The base's ``embed_out.weight`` is its vocab head, which TinyVLA's UNet
   replaces under the same name: dropped, as ``from_pretrained`` drops it.
3. ``non_lora_trainables.bin`` via ``torch.load(weights_only=True)``: ``base_model.`` stripped, then
   ``model.`` when keys start ``model.gpt_neox.``, keys containing ``lora`` dropped (as the original),
   and peft >= 0.7's ``<layer>.base_layer.weight`` mapped to ``<layer>.weight`` (the original's
   ``strict=False`` load silently skips those, keeping the *base* weights of every LoRA layer).
4. The peft adapter (``adapter_model.safetensors`` or ``.bin``) merged: ``W += B A * alpha / r``
   with alpha and r from ``adapter_config.json`` (``merge_and_unload`` of peft).

Precision: every tensor is loaded into a float32 model, as the original's builder does when it
loads the base with ``torch_dtype=float32`` (the release stores the base VLM in bf16 and
``non_lora_trainables.bin`` -- the UNet head and the projector -- in fp32; each keeps its exact
value), the LoRA is merged in float32, and derived buffers (GPT-NeoX's rotary ``inv_freq``) stay
float32. The original eval's builder passes ``torch_dtype=float16``, which cannot run the
droid_diffusion head (its bf16 step embedding meets fp16 Linear weights); fp32 is the precision at
which the original runs. Lower precisions are the ``quantization`` setting, cast after all this.

Unlike ``strict=False``, every key is accounted for: a checkpoint key the model lacks is an error
unless it is one of :data:`BENIGN_UNEXPECTED`, and a model weight that no file provides is an error.

Merged save (``lora_enable False``: a dir with ``config.json`` with action keys and the full
weights) loads directly; its tokenizer comes from the dir itself (or ``model_base``).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vla_gym.policies.tinyvla.config import TinyVLAConfig, has_action_keys, parse_config
from vla_gym.policies.toolkit.safe_load import read_json
from vla_gym.policies.tinyvla.modeling import LlavaPythia
from vla_gym.policies.tinyvla.unet import unet_kwargs_from_state
from vla_gym.policies.toolkit.errors import CheckpointError
from vla_gym.policies.toolkit.lora import BASE, LORA_A, LORA_B, lora_scaling_from_config, merge_lora_state
from vla_gym.policies.toolkit.safe_load import load_safetensors, load_torch_state_dict

BENIGN_UNEXPECTED = (
    "embed_out.weight",  # the base VLM's vocab head; TinyVLA's UNet takes the name
    "*.attention.bias", "*.attention.masked_bias",  # causal-mask buffers of older transformers GPT-NeoX
    "*rotary_emb.inv_freq",  # derived rotary constants
    "*.position_ids",  # CLIP's position-id buffer of older transformers
)
NON_LORA = "non_lora_trainables.bin"


@dataclass
class LoadReport:
    """What the load did with each file's keys (kept on the policy for inspection)."""

    layout: str
    files: list[str] = field(default_factory=list)
    dropped_benign: list[str] = field(default_factory=list)
    lora_layers: int = 0
    lora_scaling: float | None = None


@dataclass
class LoadedTinyVLA:
    """A loaded TinyVLA: the model, its config, tokenizer, image processor and stats."""
    model: LlavaPythia
    cfg: TinyVLAConfig
    tokenizer_dir: Path
    processor_dirs: list[Path]
    stats_dirs: list[Path]
    report: LoadReport


def read_weights(d: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """All tensors of an HF weights dir: safetensors (single or sharded) or ``pytorch_model.bin`` (weights only)."""
    d = Path(d)
    for index_name, loader in (("model.safetensors.index.json", load_safetensors),
                               ("pytorch_model.bin.index.json", load_torch_state_dict)):
        if (d / index_name).is_file():
            weight_map = read_json(d / index_name, "weights index").get("weight_map", {})
            shards = sorted({str(v) for v in weight_map.values()})
            if not shards or any("/" in s or s.startswith(".") for s in shards):
                raise CheckpointError(f"{d / index_name}: bad or empty weight_map")
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(loader(d / shard))
            return state, [d / s for s in shards]
    if (d / "model.safetensors").is_file():
        return load_safetensors(d / "model.safetensors"), [d / "model.safetensors"]
    if (d / "pytorch_model.bin").is_file():
        return load_torch_state_dict(d / "pytorch_model.bin"), [d / "pytorch_model.bin"]
    raise CheckpointError(f"{d} has no model.safetensors(.index.json) or pytorch_model.bin; point at the base VLM "
                          "dir (policy.model_base) or a merged TinyVLA save")


def clean_non_lora(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original's key rewriting of ``non_lora_trainables.bin`` plus peft's ``.base_layer.`` mapped away."""
    state = {(k[len("base_model."):] if k.startswith("base_model.") else k): v for k, v in state.items()}
    if any(k.startswith("model.gpt_neox.") for k in state):
        state = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state.items()}
    return {k.replace(BASE, "."): v for k, v in state.items() if "lora" not in k}


def _benign(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pat) for pat in BENIGN_UNEXPECTED)


def _overlay(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor], shapes: dict[str, torch.Size],
             file: Path, report: LoadReport) -> None:
    unexpected = []
    for key, value in source.items():
        if key not in shapes:
            if _benign(key):
                report.dropped_benign.append(f"{file.name}:{key}")
            else:
                unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(shapes[key]):
            raise CheckpointError(f"{file}: {key} has shape {tuple(value.shape)}, the model built from config.json "
                                  f"expects {tuple(shapes[key])}; config.json and weights are from different runs")
        target[key] = value
    if unexpected:
        raise CheckpointError(f"{file}: {len(unexpected)} keys the TinyVLA model does not have, e.g. "
                              f"{unexpected[:5]}; the checkpoint is not a droid_diffusion LLaVA-Pythia or is damaged")


def _adapter_state(ckpt: Path) -> tuple[dict[str, torch.Tensor], Path]:
    if (ckpt / "adapter_model.safetensors").is_file():
        file = ckpt / "adapter_model.safetensors"
        raw = load_safetensors(file)
    elif (ckpt / "adapter_model.bin").is_file():
        file = ckpt / "adapter_model.bin"
        raw = load_torch_state_dict(file)
    else:
        raise CheckpointError(f"{ckpt} has adapter_config.json but no adapter_model.safetensors or adapter_model.bin")
    out = {}
    for key, value in raw.items():
        name = key[len("base_model.model."):] if key.startswith("base_model.model.") else key
        for short, long in ((".lora_A.weight", LORA_A), (".lora_B.weight", LORA_B)):
            if name.endswith(short):
                name = name[: -len(short)] + long
        if not name.endswith((LORA_A, LORA_B)):
            raise CheckpointError(f"{file}: {key} is not a LoRA A/B weight (DoRA, embedding LoRA and modules_to_save "
                                  "are not supported)")
        out[name] = value
    return out, file


def merge_adapter(state: dict[str, torch.Tensor], ckpt: Path, report: LoadReport) -> dict[str, torch.Tensor]:
    """``state`` with the peft adapter in ``ckpt`` folded in (alpha, r from its ``adapter_config.json``)."""
    cfg = read_json(ckpt / "adapter_config.json", "peft adapter config")
    if cfg.get("use_dora"):
        raise CheckpointError(f"{ckpt / 'adapter_config.json'}: DoRA adapters are not supported")
    scaling = lora_scaling_from_config(ckpt)
    lora, file = _adapter_state(ckpt)
    layers = sorted({k[: -len(LORA_A)] for k in lora if k.endswith(LORA_A)})
    missing = [layer for layer in layers if f"{layer}.weight" not in state]
    if missing:
        raise CheckpointError(f"{file}: LoRA targets {missing[:5]} are not layers of the model")
    staged = {f"{layer}{BASE}weight": state[f"{layer}.weight"].float() for layer in layers}  # merge in fp32
    staged.update(lora)
    merged = merge_lora_state(staged, scaling, str(file))
    report.lora_layers = len(layers)
    if layers:
        report.lora_scaling = scaling(int(lora[layers[0] + LORA_A].shape[0]))
    report.files.append(str(file))
    return {**state, **merged}


def _build(cfg: TinyVLAConfig, state: dict[str, torch.Tensor]) -> tuple[LlavaPythia, dict[str, torch.Size]]:
    model = LlavaPythia(cfg, unet_kwargs_from_state(state))
    return model, {k: v.shape for k, v in model.state_dict().items()}


def _finish(model: LlavaPythia, state: dict[str, torch.Tensor], shapes: dict[str, torch.Size], where: str) -> None:
    missing = sorted(set(shapes) - set(state))
    if missing:
        raise CheckpointError(f"{where}: no weights for {len(missing)} parameters, e.g. {missing[:5]}; a LoRA run "
                              f"needs {NON_LORA} (with the embed_out UNet) next to its adapter")
    model.to(torch.float32)  # the original's builder at fp32: stored bf16 tensors upcast exactly, fp32 ones kept
    model.load_state_dict(state, strict=True)
    model.eval()


def load_tinyvla(checkpoint: str | Path, model_base: str | Path | None = None) -> LoadedTinyVLA:
    """Load a LoRA run (with ``model_base``) or a merged TinyVLA dir; see the module docstring."""
    ckpt = Path(checkpoint).expanduser()
    if not ckpt.is_dir():
        raise CheckpointError(f"policy.checkpoint={ckpt} is not a directory")
    base = Path(model_base).expanduser() if model_base is not None else None
    dirs = [ckpt, ckpt.parent]
    if (ckpt / "adapter_config.json").is_file():
        if base is None:
            raise CheckpointError(f"{ckpt} is a LoRA checkpoint (adapter_config.json); set policy.model_base to the "
                                  "base VLM dir it was trained from (e.g. a local copy of lesjie/Llava-Pythia-400M)")
        cfg_file = next((d / "config.json" for d in dirs if has_action_keys(d / "config.json")), None)
        if cfg_file is None:
            raise CheckpointError(f"no config.json with action keys in {ckpt} or {ckpt.parent}; train_tinyvla.py "
                                  "saves it in the run dir (the parent of checkpoint-N)")
        cfg = parse_config(cfg_file)
        report = LoadReport(layout="lora", files=[str(cfg_file)])
        if not (ckpt / NON_LORA).is_file():
            raise CheckpointError(f"{ckpt / NON_LORA} is missing; it holds the UNet head and the non-LoRA weights "
                                  "(scripts/process_ckpts.sh writes it for checkpoint-N dirs)")
        base_state, base_files = read_weights(base)
        non_lora = clean_non_lora(load_torch_state_dict(ckpt / NON_LORA))
        model, shapes = _build(cfg, {**base_state, **non_lora})
        state: dict[str, torch.Tensor] = {}
        _overlay(state, base_state, shapes, base_files[0], report)
        _overlay(state, non_lora, shapes, ckpt / NON_LORA, report)
        report.files += [str(f) for f in base_files] + [str(ckpt / NON_LORA)]
        state = merge_adapter(state, ckpt, report)
        _finish(model, state, shapes, str(ckpt))
        tok_dir = base
    else:
        if not has_action_keys(ckpt / "config.json"):
            raise CheckpointError(f"{ckpt / 'config.json'} is missing or has no action keys: not a merged TinyVLA save. "
                                  "For a LoRA run point policy.checkpoint at the dir with adapter_config.json")
        cfg = parse_config(ckpt / "config.json")
        report = LoadReport(layout="merged", files=[str(ckpt / "config.json")])
        raw, files = read_weights(ckpt)
        model, shapes = _build(cfg, raw)
        state = {}
        _overlay(state, raw, shapes, files[0], report)
        report.files += [str(f) for f in files]
        _finish(model, state, shapes, str(ckpt))
        tok_dir = ckpt if (ckpt / "tokenizer_config.json").is_file() or base is None else base
    head = model.embed_out
    if head.action_dim != cfg.action_dim or head.state_dim != cfg.state_dim:
        raise CheckpointError(f"{cfg.source}: action_dim={cfg.action_dim}, state_dim={cfg.state_dim} but the embed_out "
                              f"UNet weights are for {head.action_dim}-D actions and {head.state_dim}-D state")
    proc_dirs = [ckpt, ckpt.parent] + ([base] if base is not None else [])
    return LoadedTinyVLA(model, cfg, tok_dir, proc_dirs, dirs, report)


def load_tokenizer(d: Path) -> Any:
    """The base VLM's tokenizer (``AutoTokenizer``, fast, local files only, no remote code)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(d), use_fast=True, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"no usable tokenizer in {d} ({exc}); the base VLM dir holds tokenizer.json and "
                              "tokenizer_config.json") from exc
