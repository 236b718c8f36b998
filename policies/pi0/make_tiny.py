"""Tiny random pi0 / pi0.5 checkpoints in the real file layouts, for tests, benchmarks and demos.

``python -m vla_gym.policies.pi0.make_tiny OUTDIR --layout openpi|lerobot --variant pi0|pi05``

- ``openpi`` (``examples/convert_jax_model_to_pytorch.py`` output): ``model.safetensors``
  (``safetensors.torch.save_model`` of PI0Pytorch in bf16: tied ``lm_head`` kept, ``embed_tokens``
  dropped, the unused ``gemma_expert.lm_head`` written), ``config.json`` with the converter's five
  keys, ``assets/physical-intelligence/libero/norm_stats.json`` (8-D state, 7-D actions; mean/std
  and q01/q99, as openpi computes them).
- ``lerobot`` (``pretrained_model/``): ``model.safetensors`` with the ``model.`` prefix (as LeRobot
  0.6.1 saves it: pi0's ``action_time_mlp_*``; LeRobot itself loads exactly these files, see
  ``tests/policies/data/make_pi0_lerobot_policy_fixture.py``), all float32 (``--dtype float32``,
  as ``lerobot/pi0``) or as a ``dtype: bfloat16`` LeRobot run saves it (``--dtype bfloat16``: the
  tensors LeRobot's ``to_bfloat16_for_selected_params`` leaves in bf16 stored bf16, the rest
  float32; the mixed F32/BF16 files of bf16-trained fine-tunes; checked against LeRobot's own
  ``save_pretrained`` by ``tests/policies/data/make_pi0_lerobot_e2e_fixture.py``), the draccus ``config.json`` of ``PI0Config``/``PI05Config``
  (LIBERO features ``observation.images.image``/``image2`` + one empty camera),
  ``policy_preprocessor.json`` / ``policy_postprocessor.json`` with the step lists of
  ``make_pi0(5)_pre_post_processors`` and their normaliser state files.

Both get a tiny SentencePiece model trained on the fly (``paligemma_tokenizer.model``, Gemma's
special ids pad 0 / eos 1 / bos 2 / unk 3, byte fallback, digits split) whose piece count is the
model's vocabulary. The network sizes are :func:`~vla_gym.policies.pi0.modeling.tiny_dims`; the
config files still name ``gemma_2b`` / ``gemma_300m``, as the real ones (the loader warns).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_gym.policies.pi0.modeling import (
    EMBED_KEY,
    EXPERT_LM_HEAD_KEY,
    LEROBOT_FP32_KEEP,
    LM_HEAD_KEY,
    Pi0Model,
    tiny_dims,
)
from vla_gym.policies.testing import BATCH_INSTRUCTIONS, INSTRUCTION
from vla_gym.policies.toolkit.tiny import TinyCheckpoints, TinyOption

LAYOUTS = ("openpi", "lerobot")
VARIANTS = ("pi0", "pi05")
TOKENIZER_FILE = "paligemma_tokenizer.model"
ASSET_ID = "physical-intelligence/libero"
HORIZON = {("openpi", "pi0"): 50, ("openpi", "pi05"): 10, ("lerobot", "pi0"): 50, ("lerobot", "pi05"): 50}
N_ACTION_STEPS = {"pi0": 50, "pi05": 10}  # LeRobot's LIBERO docs: pi05 --policy.n_action_steps=10
TOKENIZER_VOCAB = 400
LEROBOT_DTYPES = ("float32", "bfloat16")


def tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: LIBERO-like instructions and pi0.5 state prompts."""
    rng = np.random.default_rng(0)
    tasks = [INSTRUCTION, *BATCH_INSTRUCTIONS, "put both the alphabet soup and the tomato sauce in the basket",
             "pick up the ketchup and place it in the basket", "push the plate to the front of the stove"]
    lines = [t for t in tasks for _ in range(5)]
    for t in tasks:
        state = " ".join(map(str, rng.integers(0, 256, 8)))
        lines.append(f"Task: {t}, State: {state};\nAction: ")
    return lines


def train_tokenizer(vocab_size: int = TOKENIZER_VOCAB) -> bytes:
    """A tiny SentencePiece BPE model (serialised) with PaliGemma's special ids and normalisation."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus()), model_writer=out, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", user_defined_symbols=["\n"], pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        hard_vocab_limit=False, allow_whitespace_only_pieces=True, num_threads=1, minloglevel=2,
    )
    return out.getvalue()


def random_model(variant: str, horizon: int, vocab: int, seed: int) -> Pi0Model:
    """The tiny network with every parameter random (norm weights too, which start at zero)."""
    torch.manual_seed(seed)
    model = Pi0Model(dataclasses.replace(tiny_dims(variant == "pi05", horizon), vocab_size=vocab))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm.weight" in name:
                p.normal_(0.0, 0.1)
    return model


def norm_stats(seed: int) -> dict[str, dict[str, list[float]]]:
    """8-D state and 7-D action statistics around LIBERO-like values (mean/std, q01/q99, min/max)."""
    rng = np.random.default_rng(seed + 100)
    state_mean = np.array([-0.05, 0.01, 1.10, 3.10, 0.10, -0.10, 0.03, -0.03])
    out = {}
    for name, mean, std in (("state", state_mean, rng.uniform(0.05, 0.4, 8)),
                            ("actions", rng.normal(0, 0.05, 7), rng.uniform(0.2, 0.5, 7))):
        out[name] = {"mean": mean.tolist(), "std": std.tolist(), "q01": (mean - 2.3 * std).tolist(),
                     "q99": (mean + 2.3 * std).tolist(), "min": (mean - 3 * std).tolist(),
                     "max": (mean + 3 * std).tolist()}
    return out


def release_state(model: Pi0Model, dtype: torch.dtype | None, seed: int) -> dict[str, torch.Tensor]:
    """What ``save_model`` writes: lm_head (not embed_tokens), plus the unused expert lm_head.

    ``dtype``: every tensor cast to it, or None to keep each parameter's own dtype (the expert head
    then takes the language model's)."""
    state = {k: v.detach().to(dtype or v.dtype).clone().contiguous() for k, v in model.state_dict().items()}
    del state[EMBED_KEY]
    assert LM_HEAD_KEY in state
    g = torch.Generator().manual_seed(seed + 1)
    vocab, width = model.dims.vocab_size, model.dims.expert.width
    state[EXPERT_LM_HEAD_KEY] = (torch.randn(vocab, width, generator=g) * 0.02).to(dtype or state[LM_HEAD_KEY].dtype)
    return state


def write_json(file: Path, value: Any) -> None:
    """Write ``value`` as indented JSON."""
    file.write_text(json.dumps(value, indent=2) + "\n")


def write_openpi(out: Path, variant: str, model: Pi0Model, stats: dict, seed: int) -> None:
    """Write ``model`` as an openpi-PyTorch checkpoint dir (safetensors, config, assets norm stats)."""
    from safetensors.torch import save_file

    save_file(release_state(model, torch.bfloat16, seed), str(out / "model.safetensors"))
    write_json(out / "config.json", {"action_dim": model.dims.action_dim, "action_horizon": model.dims.action_horizon,
                                     "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m",
                                     "precision": "bfloat16"})
    assets = out / "assets" / ASSET_ID
    assets.mkdir(parents=True, exist_ok=True)
    write_json(assets / "norm_stats.json", {"norm_stats": {k: {s: v[s] for s in ("mean", "std", "q01", "q99")}
                                                           for k, v in stats.items()}})


def lerobot_config(variant: str, horizon: int, dtype: str = "float32") -> dict[str, Any]:
    """``config.json`` of a LeRobot 0.6.1 PI0Config / PI05Config fine-tuned on LIBERO (its draccus fields, exactly)."""
    pi05 = variant == "pi05"
    kind = "QUANTILES" if pi05 else "MEAN_STD"
    image = {"type": "VISUAL", "shape": [3, 256, 256]}
    return {
        "type": variant, "n_obs_steps": 1,
        "input_features": {"observation.images.image": image, "observation.images.image2": image,
                           "observation.state": {"type": "STATE", "shape": [8]},
                           # added by validate_features() (empty_cameras=1) before the config is saved
                           "observation.images.empty_camera_0": {"type": "VISUAL", "shape": [3, 224, 224]}},
        "output_features": {"action": {"type": "ACTION", "shape": [7]}},
        "device": "cuda", "use_amp": False, "use_peft": False, "push_to_hub": False, "repo_id": None,
        "private": None, "tags": None, "license": None, "pretrained_path": None, "pretrained_revision": None,
        "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m", "dtype": dtype,
        "chunk_size": horizon, "n_action_steps": N_ACTION_STEPS[variant], "max_state_dim": 32, "max_action_dim": 32,
        "num_inference_steps": 10, "use_relative_actions": False, "relative_exclude_joints": ["gripper"],
        "action_feature_names": None, "time_sampling_beta_alpha": 1.5, "time_sampling_beta_beta": 1.0,
        "time_sampling_scale": 0.999, "time_sampling_offset": 0.001, "min_period": 0.004, "max_period": 4.0,
        "rtc_config": None, "image_resolution": [224, 224], "empty_cameras": 1,
        "tokenizer_max_length": 200 if pi05 else 48,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": kind, "ACTION": kind},
        "gradient_checkpointing": False, "compile_model": False, "compile_mode": "max-autotune",
        "freeze_vision_encoder": False, "train_expert_only": False, "optimizer_lr": 2.5e-05,
        "optimizer_betas": [0.9, 0.95], "optimizer_eps": 1e-08, "optimizer_weight_decay": 0.01,
        "optimizer_grad_clip_norm": 1.0, "scheduler_warmup_steps": 1000, "scheduler_decay_steps": 30000,
        "scheduler_decay_lr": 2.5e-06,
    }


def _normalizer(features: dict[str, Any], norm_map: dict[str, str], state_file: str, registry: str) -> dict:
    return {"registry_name": registry, "config": {"eps": 1e-08, "features": features, "norm_map": norm_map},
            "state_file": state_file}


def write_lerobot(out: Path, variant: str, model: Pi0Model, stats: dict, seed: int, dtype: str = "float32") -> None:
    """Write ``model`` as a LeRobot ``pretrained_model`` dir (prefixed safetensors, config, processors)."""
    from safetensors.torch import save_file

    if dtype not in LEROBOT_DTYPES:
        raise ValueError(f"dtype must be one of {LEROBOT_DTYPES}, got {dtype!r}")
    if dtype == "bfloat16":  # LeRobot casts at construction, then loads: the kept tensors keep their values
        model.set_precision(torch.bfloat16, keep_fp32=LEROBOT_FP32_KEEP, round_kept=False)
    state = release_state(model, None, seed)
    save_file({f"model.{k}": v for k, v in state.items()}, str(out / "model.safetensors"))
    cfg = lerobot_config(variant, model.dims.action_horizon, dtype)
    write_json(out / "config.json", cfg)
    norm_map = cfg["normalization_mapping"]
    features = {**cfg["input_features"], **cfg["output_features"]}
    tokenizer = {"registry_name": "tokenizer_processor",
                 "config": {"max_length": cfg["tokenizer_max_length"], "task_key": "task", "padding_side": "right",
                            "padding": "max_length", "truncation": True, "tokenizer_name": "google/paligemma-3b-pt-224"}}
    rename = {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}}
    batch = {"registry_name": "to_batch_processor", "config": {}}
    device = {"registry_name": "device_processor", "config": {"device": "cuda", "float_dtype": None}}
    relative = {"registry_name": "relative_actions_processor",
                "config": {"enabled": False, "exclude_joints": ["gripper"], "action_names": None}}
    if variant == "pi0":
        steps = [rename, batch, {"registry_name": "pi0_new_line_processor", "config": {}}, tokenizer, device,
                 relative, None]
    else:
        steps = [rename, batch, relative, None,
                 {"registry_name": "pi05_prepare_state_tokenizer_processor_step", "config": {}},
                 tokenizer, device]
    k = steps.index(None)
    pre_file = f"policy_preprocessor_step_{k}_normalizer_processor.safetensors"
    steps[k] = _normalizer(features, norm_map, pre_file, "normalizer_processor")
    write_json(out / "policy_preprocessor.json", {"name": "policy_preprocessor", "steps": steps})
    post_file = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    post = [_normalizer({"action": cfg["output_features"]["action"]}, norm_map, post_file, "unnormalizer_processor"),
            {"registry_name": "absolute_actions_processor", "config": {"enabled": False}},
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}]
    write_json(out / "policy_postprocessor.json", {"name": "policy_postprocessor", "steps": post})
    tensors = {f"{feat}.{s}": torch.tensor(v[s], dtype=torch.float32)
               for feat, v in (("observation.state", stats["state"]), ("action", stats["actions"])) for s in v}
    save_file({k: v for k, v in tensors.items()}, str(out / pre_file))
    save_file({k: v for k, v in tensors.items() if k.startswith("action.")}, str(out / post_file))


def write_tiny_pi0(outdir: str | Path, layout: str, variant: str, seed: int = 0, dtype: str = "float32") -> Path:
    """Write a tiny random checkpoint of ``layout`` / ``variant`` into ``outdir``; returns ``outdir``.

    ``dtype``: LeRobot dirs only, the ``config.json`` dtype the files are stored as (openpi: bf16 always)."""
    if layout not in LAYOUTS or variant not in VARIANTS:
        raise ValueError(f"layout must be one of {LAYOUTS} and variant one of {VARIANTS}, got {layout!r}, {variant!r}")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    sp_model = train_tokenizer()
    (out / TOKENIZER_FILE).write_bytes(sp_model)
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_proto=sp_model).get_piece_size()
    model = random_model(variant, HORIZON[(layout, variant)], vocab, seed)
    stats = norm_stats(seed)
    if layout == "openpi":
        if dtype != "float32":
            raise ValueError("openpi dirs are stored in bfloat16 as the converter writes them; dtype applies to LeRobot")
        write_openpi(out, variant, model, stats, seed)
    else:
        write_lerobot(out, variant, model, stats, seed, dtype)
    return out


def write_tiny(outdir: Path, seed: int = 0) -> dict[str, Path]:
    """pi0 and pi0.5 in both layouts: ``pi0-openpi``, ``pi0-lerobot``, ``pi05-openpi``, ``pi05-lerobot``."""
    outdir = Path(outdir)
    return {f"{v}-{layout}": write_tiny_pi0(outdir / f"{v}-{layout}", layout, v, seed)
            for v in VARIANTS for layout in LAYOUTS}


def _option(variant: str) -> TinyOption:
    # pi0 states its fp32 math as the reference (issue 12); fp16/bf16 are measured against it.
    return TinyOption(f"{variant}-openpi", kwargs={"variant": variant}, cpu_kwargs={"precision": "fp32"},
                      stochastic=True, reference_setting="fp32")


TINY = TinyCheckpoints(name="pi0", write=write_tiny, options={v: _option(v) for v in VARIANTS})


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m vla_gym.policies.pi0.make_tiny OUTDIR --layout L --variant V [--seed N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--layout", choices=LAYOUTS, required=True)
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=LEROBOT_DTYPES, default="float32", help="LeRobot dirs: stored dtype")
    args = parser.parse_args(argv)
    print(write_tiny_pi0(args.outdir, args.layout, args.variant, args.seed, args.dtype))


if __name__ == "__main__":
    main()
