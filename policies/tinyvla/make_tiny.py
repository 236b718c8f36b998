"""Tiny random TinyVLA checkpoints with the release's file names, config keys and parameter names.

``python -m vla_gym.policies.tinyvla.make_tiny OUTDIR`` writes::

    base/      the base VLM (``lesjie/Llava-Pythia-*`` layout): config.json (llava_pythia, no action keys),
               model.safetensors (gpt_neox.*, gpt_neox.vision_tower.vision_model.*, gpt_neox.mm_projector.{0,2}.*
               and the vocab head embed_out.weight), tokenizer.json/tokenizer_config.json/special_tokens_map.json,
               preprocessor_config.json
    run/       a LoRA training OUTPUT: config.json (+ action_head_type, action_dim, state_dim, chunk_size, concat),
               dataset_stats.pkl (pickle, as train_tinyvla.py) and its safe twin dataset_stats.json
    run/checkpoint-8/  adapter_config.json (r 4, alpha 16: scaling 4 as the release's 256 / 64),
               adapter_model.safetensors (peft names, non-zero lora_B), non_lora_trainables.bin
               (``base_model.model.*`` incl. peft's ``.base_layer.`` names; fine-tuned projector and the UNet),
               preprocessor_config.json
    merged/    the same policy saved merged (peft's own merge): config.json, model.safetensors, tokenizer,
               preprocessor_config.json, dataset_stats.json

Sizes are tiny (GPT-NeoX 2 x 32, CLIP 2 x 32 at 56 px / patch 14, UNet down_dims 8-16-32, chunk 8);
actions are 7-D (LIBERO's delta convention, ``action_transform=auto``), the state 8-D (vla_gym's ``state``).
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
from pathlib import Path

import numpy as np
import torch

from vla_gym.policies.toolkit.tiny import TinyCheckpoints, TinyOption

CHECKPOINT = "checkpoint-8"
LORA_R, LORA_ALPHA = 4, 16
IMAGE_SIZE, PATCH = 56, 14
ACTION_DIM, STATE_DIM, CHUNK = 7, 8, 8
UNET_DIMS, STEP_DIM = (8, 16, 32), 16
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _corpus() -> list[str]:
    from vla_gym.policies.testing import BATCH_INSTRUCTIONS
    from vla_gym.policies.tinyvla.processing import conv_pythia_prompt

    return [conv_pythia_prompt(t) for t in BATCH_INSTRUCTIONS] * 4 + ["pick place open close put the bowl plate"]


def write_tokenizer(out: Path) -> int:
    """A byte-level BPE (as Pythia's) trained on the prompt words; returns its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    # merges as "a b" strings, the format of Pythia's own tokenizer.json (readable by tokenizers 0.15 too)
    data = json.loads((out / "tokenizer.json").read_text())
    data["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {**special, "add_prefix_space": False, "add_bos_token": False, "model_max_length": 2048,
         "tokenizer_class": "GPTNeoXTokenizer"}, indent=1))
    return tok.get_vocab_size()


def write_preprocessor(out: Path) -> None:
    """``llava-pythia/preprocessor_config.json`` with the tiny size (the release: 336)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": IMAGE_SIZE, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "size": IMAGE_SIZE}, indent=1))


def base_config(vocab: int) -> dict:
    """A llava_pythia base VLM config.json (GPT-NeoX keys + vision_config), as convert_model2base writes."""
    tower = {"hidden_size": 32, "intermediate_size": 64, "projection_dim": 32, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_channels": 3, "image_size": IMAGE_SIZE, "patch_size": PATCH,
             "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "attention_dropout": 0.0,
             "initializer_range": 0.02, "initializer_factor": 1.0, "mm_vision_select_feature": "patch",
             "mm_vision_select_layer": -2, "vision_model_name_or_path": "openai/clip-vit-large-patch14-336",
             "concat": "None", "model_type": "llava_pythia_clip_vision_model"}
    projector = {"mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 32, "hidden_size": 32,
                 "model_type": "llava_pythia_projector"}
    return {"architectures": ["LlavaPythiaForCausalLM"], "model_type": "llava_pythia", "bos_token_id": 0,
            "eos_token_id": 0, "hidden_act": "gelu", "hidden_size": 32, "initializer_range": 0.02,
            "intermediate_size": 64, "layer_norm_eps": 1e-5, "max_position_embeddings": 512,
            "num_attention_heads": 4, "num_hidden_layers": 2, "rotary_emb_base": 10000, "rotary_pct": 0.25,
            "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": True,
            "use_parallel_residual": True, "vocab_size": vocab,
            "vision_config": {"vision_tower": tower, "mm_projector": projector}}


def run_config(vocab: int) -> dict:
    """The fine-tuned run's config.json: the base keys plus what train_tinyvla.py / load_llava_pythia set."""
    return {**base_config(vocab), "action_head_type": "droid_diffusion", "action_dim": ACTION_DIM,
            "state_dim": STATE_DIM, "chunk_size": CHUNK, "concat": "token_cat", "tune_mm_mlp_adapter": False,
            "freeze_vision_tower": False, "image_aspect_ratio": "pad", "tokenizer_padding_side": "right",
            "tokenizer_model_max_length": 2048, "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
            "non_lora_lr": 2e-5, "use_cache": True}


def dataset_stats() -> dict[str, np.ndarray]:
    """``get_norm_stats`` output for LIBERO-like 7-D actions and the 8-D state (float32, as the original)."""
    f = np.float32
    a_lo = np.array([-0.9, -0.8, -0.9, -0.2, -0.25, -0.3, -1.0], f) - f(1e-4)
    a_hi = np.array([0.9, 0.85, 0.95, 0.2, 0.3, 0.35, 1.0], f) + f(1e-4)
    return {"action_mean": ((a_lo + a_hi) / 2).astype(f), "action_std": np.full(7, 0.3, f),
            "action_min": a_lo, "action_max": a_hi,
            "qpos_mean": np.array([-0.05, 0.0, 1.05, 3.0, 0.1, -0.1, 0.02, -0.02], f),
            "qpos_std": np.array([0.1, 0.15, 0.12, 0.3, 0.2, 0.25, 0.01, 0.01], f),
            "example_qpos": np.zeros((1, 8), f)}


def lora_targets(model: torch.nn.Module) -> list[str]:
    """``find_all_linear_names``: every nn.Linear of the ViT and LLM, full names, minus projector and head."""
    skip = ("mm_projector", "embed_out", "proj_to_action", "vision_resampler")
    return sorted(n for n, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and not any(s in n for s in skip))


def write_tiny_tinyvla(outdir: Path, seed: int = 0) -> dict[str, Path]:
    """Write base/, run/ (with checkpoint-8/) and merged/ under ``outdir``; returns their paths."""
    from peft import LoraConfig, inject_adapter_in_model
    from safetensors.torch import save_file

    from vla_gym.policies.tinyvla.config import parse_config
    from vla_gym.policies.tinyvla.modeling import LlavaPythia
    from vla_gym.policies.tinyvla.stats import write_stats

    outdir = Path(outdir)
    base, run = outdir / "base", outdir / "run"
    ckpt, merged = run / CHECKPOINT, outdir / "merged"
    vocab = write_tokenizer(base)
    write_preprocessor(base)
    (base / "config.json").write_text(json.dumps(base_config(vocab), indent=1))
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(run_config(vocab), indent=1))
    torch.manual_seed(seed)
    cfg = parse_config(run / "config.json")
    model = LlavaPythia(cfg, {"down_dims": UNET_DIMS, "diffusion_step_embed_dim": STEP_DIM}).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than HF's init so that tiny outputs vary with the inputs
            p.normal_(0.0, 0.2)
        model.gpt_neox.embed_in.weight.normal_(0.0, 1.0)
    # base VLM: everything but the UNet, plus the vocab head under embed_out.weight
    base_state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("embed_out.")}
    base_state["embed_out.weight"] = torch.randn(vocab, cfg.hidden_size) * 0.02
    save_file(base_state, str(base / "model.safetensors"), metadata={"format": "pt"})
    # fine-tuning changed the projector (a non-LoRA trainable) and added LoRA to every ViT/LLM Linear
    with torch.no_grad():
        for p in model.gpt_neox.mm_projector.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    lora_cfg = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                          target_modules=lora_targets(model))
    peft_model = inject_adapter_in_model(copy.deepcopy(lora_cfg), copy.deepcopy(model))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.1)  # non-zero lora_B: the merge changes the outputs
    state = peft_model.state_dict()
    ckpt.mkdir(parents=True, exist_ok=True)
    adapter = {f"base_model.model.{k.replace('.default.weight', '.weight')}": v.contiguous()
               for k, v in state.items() if "lora_" in k}
    save_file(adapter, str(ckpt / "adapter_model.safetensors"), metadata={"format": "pt"})
    lora_cfg.save_pretrained(str(ckpt))
    non_lora = {f"base_model.model.{k}": v.clone() for k, v in peft_model.named_parameters() if "lora_" not in k}
    torch.save(non_lora, ckpt / "non_lora_trainables.bin")
    write_preprocessor(ckpt)
    stats = dataset_stats()
    with open(run / "dataset_stats.pkl", "wb") as f:
        pickle.dump(stats, f)
    write_stats(stats, run / "dataset_stats.json")
    # merged/: peft's own merge of the same adapter
    for module in peft_model.modules():
        if hasattr(module, "merge") and hasattr(module, "lora_A"):
            module.merge()
    merged_state = {k.replace(".base_layer.", "."): v.contiguous() for k, v in peft_model.state_dict().items()
                    if "lora_" not in k}
    merged.mkdir(parents=True, exist_ok=True)
    save_file(merged_state, str(merged / "model.safetensors"), metadata={"format": "pt"})
    (merged / "config.json").write_text(json.dumps(run_config(vocab), indent=1))
    write_tokenizer(merged)
    write_preprocessor(merged)
    write_stats(stats, merged / "dataset_stats.json")
    return {"base": base, "run": run, "checkpoint": ckpt, "merged": merged}


def write_tiny(outdir: Path, seed: int = 0) -> dict[str, Path]:
    """``tinyvla-base``, the LoRA ``tinyvla-checkpoint`` (``run/checkpoint-N``), ``tinyvla-merged``."""
    return {f"tinyvla-{k}": v for k, v in write_tiny_tinyvla(Path(outdir) / "tinyvla", seed).items()}


# TinyVLA states its fp32 math as the reference (issue 11); fp16/bf16 are measured against it.
TINY = TinyCheckpoints(
    name="tinyvla",
    write=write_tiny,
    options={"tinyvla": TinyOption("tinyvla-checkpoint", paths={"model_base": "tinyvla-base"},
                                   stochastic=True, reference_setting="fp32")},
)


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m vla_gym.policies.tinyvla.make_tiny OUTDIR [--seed N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in write_tiny_tinyvla(args.outdir, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
