"""Tiny OpenVLA-OFT LIBERO checkpoint in the layout ``vla-scripts/finetune.py`` writes.

::

    config.json, model-0000k-of-0000n.safetensors (+ index)   merged VLA weights (base + LoRA)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json, preprocessor_config.json
    dataset_statistics.json                                   action + 8-D proprio q01/q99
    action_head--150000_checkpoint.pt                         L1 regression head (DDP "module." keys), bf16
    proprio_projector--150000_checkpoint.pt                   proprio projector (DDP "module." keys), fp32
    lora_adapter/adapter_config.json, adapter_model.safetensors  the LoRA (peft) before merging

and a FiLM variant (``openvla-oft-film/``): the same files plus ``vision_backbone--150000_checkpoint.pt``,
the ``state_dict()`` of the FiLMed, PEFT-wrapped vision backbone as ``finetune.py`` saves it
(``vla.module.vision_backbone``: no ``module.`` prefix; unmerged ``base_layer``/``lora_A``/``lora_B``
entries, LoRA rank 32 so ``alpha = min(r, 16)`` scales by 0.5; FiLM ``scale``/``shift`` in float32).

Stored dtypes as ``finetune.py`` saves them: ``init_module(L1RegressionActionHead, ..., to_bf16=True)``
makes the action head bf16, ``init_module(ProprioProjector, ...)`` leaves the projector fp32, and
each is saved with ``torch.save(module.state_dict())`` from its DDP wrapper.

Written with the OpenVLA checkpoints by :func:`write_tiny`, this family's declared tiny set (``TINY``),
which ``vla-gym checkpoints --families openvla`` runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vla_gym.policies.toolkit.tiny import TinyCheckpoints, TinyOption

LORA_TARGETS = [
    "qkv",
    "proj",
    "fc1",
    "fc2",
    "fc3",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
]
# peft "all-linear" (0.11, suffix matching) on OpenVLA also hits SigLIP's attention pool q / kv.
FILM_LORA_TARGETS = [*LORA_TARGETS, "q", "kv"]
FILM_LORA_RANK = 32
STEP = 150000


def peft_on_base(cfg: Any, base_state: dict[str, torch.Tensor], seed: int, rank: int, targets: Any) -> Any:
    """The tiny base VLA with a freshly initialised peft LoRA (``lora_alpha = min(r, 16)``, as OFT)."""
    from peft import LoraConfig, get_peft_model
    from vla_gym.policies.openvla.loader import build_on_meta, load_into, materialize_buffers
    from vla_gym.policies.openvla.modeling import OpenVLAModel

    model = build_on_meta(lambda: OpenVLAModel(cfg))
    load_into(model, {k: v.clone() for k, v in base_state.items()}, "tiny base")
    materialize_buffers(model)
    torch.manual_seed(seed)
    lora = LoraConfig(r=rank, lora_alpha=min(rank, 16), lora_dropout=0.0, target_modules=targets,
                      init_lora_weights="gaussian")
    return get_peft_model(model, lora)


def lora_merged_state(
    base_state: dict[str, torch.Tensor], config: dict, adapter_dir: Path, seed: int, rank: int = 4
) -> dict[str, torch.Tensor]:
    """Make a random LoRA on the base model with peft, save it, and return the merged weights."""
    from vla_gym.policies.openvla.config import OpenVLAConfig

    peft_model = peft_on_base(OpenVLAConfig.from_dict(config), base_state, seed, rank, LORA_TARGETS)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero; make the adapter actually change weights
                p.normal_(0.0, 0.02)
    peft_model.save_pretrained(str(adapter_dir))
    merged = peft_model.merge_and_unload()
    return {k: v.detach().to(torch.bfloat16).contiguous() for k, v in merged.state_dict().items()}


def write_oft_checkpoint(out: Path, base_state: dict[str, torch.Tensor], seed: int = 1) -> None:
    """Write the tiny OFT checkpoint; ``base_state`` is the tiny OpenVLA it was fine-tuned from."""
    from vla_gym.policies.openvla.make_tiny import hf_config, norm_stats, write_hf_checkpoint
    from vla_gym.policies.openvla_oft.heads import L1RegressionActionHead, ProprioProjector

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = norm_stats("libero_spatial_no_noops", with_proprio=True)
    config = hf_config(stats)
    merged = lora_merged_state(base_state, config, out / "lora_adapter", seed)
    write_hf_checkpoint(out, stats, seed, state=merged)
    llm_dim = int(config["text_config"]["hidden_size"])
    torch.manual_seed(seed)
    head = L1RegressionActionHead(llm_dim=llm_dim, action_dim=7, num_actions_chunk=8).to(torch.bfloat16)
    proj = ProprioProjector(llm_dim=llm_dim, proprio_dim=8)  # fp32, as finetune.py (no to_bf16)
    for module, name in ((head, "action_head"), (proj, "proprio_projector")):
        state = {f"module.{k}": v for k, v in module.state_dict().items()}  # saved from a DDP wrapper
        torch.save(state, out / f"{name}--{STEP}_checkpoint.pt")


def write_film_checkpoint(
    out: Path, oft_dir: Path, base_state: dict[str, torch.Tensor], seed: int = 2
) -> dict[str, torch.Tensor]:
    """Copy the tiny OFT checkpoint and add a FiLM ``vision_backbone--<step>_checkpoint.pt``.

    Mirrors finetune.py: LoRA on the base VLA first, then the FiLM wrapper (so ``scale``/``shift``
    get no LoRA), then ``torch.save(vision_backbone.state_dict())``. Returns the saved state.
    """
    import shutil

    from vla_gym.policies.openvla.config import OpenVLAConfig
    from vla_gym.policies.openvla_oft.film import FiLMedPrismaticVisionBackbone

    out = Path(out)
    shutil.copytree(oft_dir, out, dirs_exist_ok=True)
    cfg = OpenVLAConfig.from_dict(json.loads((out / "config.json").read_text()))
    peft_model = peft_on_base(cfg, base_state, seed, FILM_LORA_RANK, FILM_LORA_TARGETS)
    inner = peft_model.base_model.model
    inner.vision_backbone = FiLMedPrismaticVisionBackbone(inner.vision_backbone, cfg.llm_dim)
    with torch.no_grad():
        for name, p in inner.vision_backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
            elif ".scale." in name or ".shift." in name:  # make FiLM clearly instruction-dependent
                p.normal_(0.0, 0.5 if name.endswith("weight") else 0.05)
    state = {k: v.detach().clone().contiguous() for k, v in inner.vision_backbone.state_dict().items()}
    torch.save(state, out / f"vision_backbone--{STEP}_checkpoint.pt")
    return state


OPENVLA_NAMES = ("openvla", "openvla-prismatic", "openvla-oft", "openvla-oft-film")


def write_tiny(outdir: Path, seed: int = 0) -> dict[str, Path]:
    """OpenVLA (HF release and Prismatic run) and OpenVLA-OFT (plain and FiLM), sharing one VLA.

    Declared here rather than in ``openvla/make_tiny.py``: the OFT checkpoints are built on the
    OpenVLA weights, and this family already depends on that one (never the reverse).
    """
    from vla_gym.policies.openvla.make_tiny import norm_stats, write_hf_checkpoint, write_prismatic_run

    outdir = Path(outdir)
    stats = norm_stats("libero_spatial_no_noops", with_proprio=False)
    state = write_hf_checkpoint(outdir / "openvla", stats, seed)
    write_prismatic_run(outdir / "openvla-prismatic", state, stats)
    write_oft_checkpoint(outdir / "openvla-oft", base_state=state, seed=seed + 1)
    write_film_checkpoint(outdir / "openvla-oft-film", outdir / "openvla-oft", base_state=state, seed=seed + 2)
    return {name: outdir / name for name in OPENVLA_NAMES}


TINY = TinyCheckpoints(
    name="openvla",
    write=write_tiny,
    options={"openvla": TinyOption("openvla", wrist=False), "openvla_oft": TinyOption("openvla-oft")},
    default=True,
)
