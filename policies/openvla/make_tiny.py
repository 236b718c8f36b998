"""Write tiny, randomly initialised OpenVLA checkpoints in the exact layout of the real releases.

The writers here and in :mod:`vla_gym.policies.openvla_oft.make_tiny` are combined by the
``openvla`` tiny set that OFT's module declares (``TINY``: OFT builds on these weights, so the
declaration lives on the dependent side); ``python -m vla_gym.policies.tiny_checkpoints OUTDIR``
writes it (in a few seconds)::

    OUTDIR/openvla/            HF release layout of openvla/openvla-7b (+ fine-tunes)
    OUTDIR/openvla-prismatic/  Prismatic training run (checkpoints/latest-checkpoint.pt)
    OUTDIR/openvla-oft/        OpenVLA-OFT LIBERO fine-tune (merged weights, action head,
                               proprio projector, lora_adapter/, dataset_statistics.json)
    OUTDIR/openvla-oft-film/   the same + vision_backbone--150000_checkpoint.pt (FiLM)

File names, config keys and parameter names are those of the releases; only sizes are tiny
(ViTs of width 32/48 and depth 3, a 2-layer Llama of width 64, a 1024-piece vocabulary whose
last 256 ids are the action tokens, padded with ``<PAD>`` to 1088 = multiple of 64). The
tokenizer is a byte-fallback BPE built offline with ``tokenizers`` (no ``tokenizer.model``:
that sentencepiece file is not read by vla_gym). One extra config key,
``vla_gym_timm_overrides``, tells the loader the toy ViT sizes.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import torch

TINY_VOCAB = 1024  # base vocabulary; ids 768..1023 are the 256 action tokens
PAD_MULTIPLE = 64
N_BINS = 256
TIMM_IDS = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
TINY_TIMM = [
    {"embed_dim": 32, "depth": 3, "num_heads": 2},
    {"embed_dim": 48, "depth": 3, "num_heads": 2},
]
TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
}

# LIBERO-like action statistics (shape and mask as in openvla-7b-finetuned-libero-*).
ACTION_STATS = {
    "mean": [0.15, 0.13, -0.15, -0.005, 0.004, -0.002, 0.5],
    "std": [0.41, 0.35, 0.50, 0.04, 0.07, 0.08, 0.5],
    "max": [0.9375, 0.9375, 0.9375, 0.1971, 0.3364, 0.375, 1.0],
    "min": [-0.9375, -0.9375, -0.9375, -0.1875, -0.3679, -0.36, 0.0],
    "q01": [-0.7454, -0.6664, -0.9375, -0.1093, -0.1807, -0.1922, 0.0],
    "q99": [0.9375, 0.8732, 0.9375, 0.1115, 0.1593, 0.1668, 1.0],
    "mask": [True, True, True, True, True, True, False],
}
PROPRIO_STATS = {
    "mean": [-0.02, 0.09, 1.05, 2.97, -0.14, -0.12, 0.026, -0.026],
    "std": [0.1, 0.13, 0.1, 0.3, 0.5, 0.2, 0.014, 0.014],
    "max": [0.17, 0.39, 1.33, 3.66, 3.56, 1.38, 0.041, 0.0013],
    "min": [-0.48, -0.32, 0.81, 0.35, -3.64, -1.84, -0.0048, -0.042],
    "q01": [-0.42, -0.28, 0.92, 1.10, -2.89, -1.36, 0.001, -0.040],
    "q99": [0.13, 0.29, 1.27, 3.48, 2.81, 0.66, 0.040, -0.001],
}


def norm_stats(key: str, with_proprio: bool) -> dict[str, Any]:
    """A ``norm_stats`` / ``dataset_statistics.json`` entry in the release format."""
    entry: dict[str, Any] = {"action": dict(ACTION_STATS), "num_transitions": 52970, "num_trajectories": 432}
    entry["proprio"] = (
        dict(PROPRIO_STATS)
        if with_proprio
        else {k: [0.0] * 7 for k in ("mean", "std", "max", "min", "q01", "q99")}
    )
    return {key: entry}


def hf_config(stats: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` with the keys of the OpenVLA release (``OpenVLAConfig.to_dict()``)."""
    return {
        "arch_specifier": "no-align+fused-gelu-mlp",
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {
            "AutoConfig": "configuration_prismatic.OpenVLAConfig",
            "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
        },
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "image_resize_strategy": "resize-naive",
        "image_sizes": [224, 224],
        "llm_backbone_id": "llama2-7b-pure",
        "llm_max_length": 2048,
        "model_type": "openvla",
        "n_action_bins": N_BINS,
        "norm_stats": stats,
        "output_projector_states": False,
        "pad_to_multiple_of": PAD_MULTIPLE,
        "pad_token_id": TINY_VOCAB,
        "text_config": {
            "model_type": "llama",
            "pad_token_id": TINY_VOCAB,
            "torch_dtype": "bfloat16",
            "vocab_size": TINY_VOCAB + PAD_MULTIPLE,
            **TINY_TEXT,
        },
        "timm_model_ids": TIMM_IDS,
        "timm_override_act_layers": [None, None],
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
        "use_fused_vision_backbone": True,
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "vla_gym_timm_overrides": TINY_TIMM,
    }


DINO_MEAN, DINO_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # timm's ImageNet stats
SIGLIP_MEAN = SIGLIP_STD = [0.5, 0.5, 0.5]


def bf16_rounded(values: list[float]) -> list[float]:
    """Values rounded through bfloat16, as the release's ``tvf_normalize_params`` hold them."""
    return torch.tensor(values).to(torch.bfloat16).float().tolist()


def preprocessor_config() -> dict[str, Any]:
    """``preprocessor_config.json`` as released: timm's stats in ``means`` / ``stds``, and the
    bfloat16-rounded DINOv2 values (``0.484375``, ...) in ``tvf_normalize_params``, which is what
    the release's processor normalises with."""
    means, stds = [DINO_MEAN, SIGLIP_MEAN], [DINO_STD, SIGLIP_STD]
    tvf_means, tvf_stds = [bf16_rounded(m) for m in means], [bf16_rounded(s) for s in stds]
    return {
        "auto_map": {
            "AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
            "AutoProcessor": "processing_prismatic.PrismaticProcessor",
        },
        "image_processor_type": "PrismaticImageProcessor",
        "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, 224, 224], [3, 224, 224]],
        "interpolations": ["bicubic", "bicubic"],
        "means": means,
        "stds": stds,
        "processor_class": "PrismaticProcessor",
        "tvf_crop_params": [{"output_size": [224, 224]}] * 2,
        "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
        "tvf_normalize_params": [
            {"inplace": False, "mean": m, "std": s} for m, s in zip(tvf_means, tvf_stds, strict=True)
        ],
        "tvf_resize_params": [{"antialias": True, "interpolation": 3, "max_size": None, "size": [224, 224]}]
        * 2,
        "use_fused_vision_backbone": True,
    }


def write_tokenizer(out: Path) -> None:
    """Byte-fallback BPE with Llama's normaliser and special ids; ``<PAD>`` added at 1024."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    vocab["\u2581"] = len(vocab)  # the empty piece, Llama id 29871
    for ch in string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault("\u2581" + ch, len(vocab))
    i = 0
    while len(vocab) < TINY_VOCAB:  # rarely used pieces; the last 256 play the action tokens
        vocab[f"\u2581tok{i}"] = len(vocab)
        i += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>", "<PAD>")]
    )
    assert tok.token_to_id("<PAD>") == TINY_VOCAB
    tok.save(str(out / "tokenizer.json"))
    special = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<PAD>", "unk_token": "<unk>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (out / "added_tokens.json").write_text(json.dumps({"<PAD>": TINY_VOCAB}))
    decoder = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in [(0, "<unk>"), (1, "<s>"), (2, "</s>"), (TINY_VOCAB, "<PAD>")]
    }
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_bos_token": True,
                "add_eos_token": False,
                "added_tokens_decoder": decoder,
                **special,
                "clean_up_tokenization_spaces": False,
                "legacy": False,
                "model_max_length": 2048,
                "padding_side": "right",
                "sp_model_kwargs": {},
                "tokenizer_class": "LlamaTokenizer",
                "use_default_system_prompt": False,
            },
            indent=2,
        )
    )


def random_state_dict(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Random weights under the release names, bf16; lm_head favours action tokens a little."""
    from vla_gym.policies.openvla.config import OpenVLAConfig
    from vla_gym.policies.openvla.modeling import OpenVLAModel

    torch.manual_seed(seed)
    model = OpenVLAModel(OpenVLAConfig.from_dict(config))
    with torch.no_grad():
        # Random LayerScale/positional init is tiny in timm; make the towers matter.
        for name, p in model.named_parameters():
            if name.endswith("scale_factor"):
                p.fill_(1.0)
        head = model.language_model.lm_head.weight
        head.mul_(0.05)
        head[TINY_VOCAB - N_BINS : TINY_VOCAB].mul_(40.0)  # so greedy decoding mostly yields action ids
    return {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}


def save_sharded(state: dict[str, torch.Tensor], out: Path, n_shards: int = 2) -> None:
    """``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json`` as HF writes them."""
    from safetensors.torch import save_file

    keys = list(state)
    per = (len(keys) + n_shards - 1) // n_shards
    weight_map: dict[str, str] = {}
    for i in range(n_shards):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i * per : (i + 1) * per]}
        save_file(part, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )


def write_hf_checkpoint(
    out: Path, stats: dict[str, Any], seed: int = 0, state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """One HF-format OpenVLA checkpoint directory (random weights unless ``state``); returns them."""
    out.mkdir(parents=True, exist_ok=True)
    config = hf_config(stats)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": TINY_VOCAB,
                "transformers_version": "4.40.1",
            }
        )
    )
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2))
    (out / "processor_config.json").write_text(
        json.dumps(
            {
                "auto_map": {"AutoProcessor": "processing_prismatic.PrismaticProcessor"},
                "processor_class": "PrismaticProcessor",
            }
        )
    )
    (out / "dataset_statistics.json").write_text(json.dumps(stats, indent=2))
    write_tokenizer(out)
    if state is None:
        state = random_state_dict(config, seed)
    save_sharded(state, out)
    return state


def to_prismatic(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Inverse of the HF conversion: the ``model`` dict of a Prismatic ``latest-checkpoint.pt``."""
    out: dict[str, dict[str, torch.Tensor]] = {"projector": {}, "llm_backbone": {}, "vision_backbone": {}}
    proj = {"projector.fc1.": "0.", "projector.fc2.": "2.", "projector.fc3.": "4."}
    for k, v in state.items():
        if k.startswith("projector."):
            p = next(p for p in proj if k.startswith(p))
            out["projector"]["projector." + proj[p] + k[len(p) :]] = v
        elif k.startswith("language_model."):
            out["llm_backbone"]["llm." + k[len("language_model.") :]] = v
        elif k.startswith("vision_backbone.featurizer."):
            k2 = "dino_featurizer." + k[len("vision_backbone.featurizer.") :]
            out["vision_backbone"][k2.replace(".scale_factor", ".gamma")] = v
        elif k.startswith("vision_backbone.fused_featurizer."):
            out["vision_backbone"]["siglip_featurizer." + k[len("vision_backbone.fused_featurizer.") :]] = v
    return out


def write_prismatic_run(out: Path, state: dict[str, torch.Tensor], stats: dict[str, Any]) -> None:
    """A Prismatic/OpenVLA training run directory holding the same weights."""
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(
        json.dumps(
            {
                "vla": {
                    "base_vlm": "prism-dinosiglip-224px+7b",
                    "type": "prism-dinosiglip-224px+mx-libero-spatial",
                },
                "model": {
                    "vision_backbone_id": "dinosiglip-vit-so-224px",
                    "llm_backbone_id": "llama2-7b-pure",
                    "arch_specifier": "no-align+fused-gelu-mlp",
                    "image_resize_strategy": "resize-naive",
                    "llm_max_length": 2048,
                },
            },
            indent=2,
        )
    )
    (out / "dataset_statistics.json").write_text(json.dumps(stats, indent=2))
    torch.save({"model": to_prismatic(state)}, out / "checkpoints" / "latest-checkpoint.pt")
