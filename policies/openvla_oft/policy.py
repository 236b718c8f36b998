"""``OpenVLAOFTPolicy``: OpenVLA-OFT's LIBERO eval (parallel decoding, L1 head) behind :class:`Policy`.

Per call (``prismatic/extern/hf/modeling_prismatic.py`` of moojink/openvla-oft):

1. agentview + wrist images, each through the reference image path, each normalised for both
   towers: 12 channels; 8-D proprio normalised with q01/q99 (clipped to [-1, 1]).
2. Sequence ``<s>, [2 x 256 patches, proprio token], prompt..., 29871, 56 zeroed action
   embeddings, </s>``, run through Llama with **full bidirectional attention** (OFT ships a
   transformers fork that drops the causal mask; here a 4-D all-true mask does the same).
   With FiLM (``vision_backbone--*_checkpoint.pt``), the towers are conditioned on the mean of
   the raw embeddings of ``<s>, prompt..., 29871, </s>`` (all but the action slots), computed
   before the action embeddings are zeroed; see :mod:`vla_gym.policies.openvla_oft.film`.
3. Hidden states (after the final norm) at the 56 positions starting at the empty piece
   29871 (each position predicts the next token) -> L1 head -> (8, 7) in [-1, 1] ->
   un-normalised with q01/q99 (+1e-8) and mask -> LIBERO gripper post-processing.

Heads: the action head and the proprio projector are built as ``experiments/robot/openvla_utils.py``
``get_action_head`` / ``get_proprio_projector`` build them -- bf16 modules, then ``load_state_dict``
-- so weights stored in fp32 (the release's projector: ``finetune.py`` trains it in fp32 and only
the action head is made bf16, ``to_bf16=True``) are rounded to bf16 as in the eval, then cast to
the compute dtype. At fp32 this is what keeps the proprio token equal to the reference's
(docs/fidelity-tinyvla-oft.md).

Batching (v2 API): B observations run as one forward pass. The text part of each row
(``prompt, action slots, </s>``) is *right*-padded, so every real token keeps the position (and
RoPE phase) it has in a B = 1 call; the padding is masked out as a key of the bidirectional
attention (padded queries see the real keys only, so nothing is NaN), kept out of the FiLM mean,
and each row's 56 action hidden states are gathered at its own offset. Measured on the tiny
checkpoints (tests/policies/test_openvla_oft.py), row b of a B = 3 batch equals the B = 1 chunk
within the tolerance stated there (the batched matmuls round differently from B = 1's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from vla_gym.policies.openvla import decoding
from vla_gym.policies.openvla.config import OpenVLAConfig
from vla_gym.policies.openvla.errors import CheckpointError
from vla_gym.policies.openvla.modeling import OpenVLAModel
from vla_gym.policies.openvla.policy import (
    REFERENCE_RENDER_SIZE,
    OpenVLAFamilyPolicy,
    load_openvla_model,
    oft_component_files,
)
from vla_gym.policies.openvla.processor import PixelTransform, PromptTokenizer
from vla_gym.policies.openvla_oft.film import FiLMedPrismaticVisionBackbone, load_film_backbone
from vla_gym.policies.openvla_oft.heads import L1RegressionActionHead, ProprioProjector
from vla_gym.policies.toolkit.device import select_device
from vla_gym.policies.toolkit.safe_load import load_torch_state_dict

from vla_gym.policy import ChunkExecution, Observation, PolicyInputs

HEAD_LOAD_DTYPE = torch.bfloat16  # openvla_utils.get_action_head / get_proprio_projector build bf16 modules
PLACEHOLDER_ID = 1  # OFT fills action slots with torch.ones (their embeddings are zeroed anyway)
STOP_ID = 2  # '</s>'


def find_component(checkpoint: Path, pattern: str) -> Path:
    """The one file named like ``<pattern>--<step>_checkpoint.pt`` (as OFT's ``find_checkpoint_file``)."""
    found = sorted(
        p for p in checkpoint.iterdir() if pattern in p.name and "checkpoint" in p.name and p.is_file()
    )
    if len(found) != 1:
        raise CheckpointError(
            f"expected exactly one {pattern}--<step>_checkpoint.pt in {checkpoint}, found "
            f"{[p.name for p in found]}; remove extra steps or copy the one from the release"
        )
    return found[0]


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load with a readable error naming the file."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not match the expected module: {exc}") from exc


def merge_lora(model: OpenVLAModel, adapter_dir: Path) -> OpenVLAModel:
    """Apply a peft LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``) and merge it."""
    from peft import PeftModel

    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (adapter_dir / name).is_file():
            raise CheckpointError(f"{adapter_dir / name} is missing; a peft LoRA adapter needs both files")
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except Exception as exc:
        raise CheckpointError(
            f"LoRA adapter {adapter_dir} could not be applied ({type(exc).__name__}: {exc})"
        ) from exc
    return peft_model.merge_and_unload()


def resolve_use_film(checkpoint: Path, use_film: bool | None) -> bool:
    """FiLM on iff ``vision_backbone--*_checkpoint.pt`` exists; an explicit flag must agree."""
    files = (
        sorted(p.name for p in checkpoint.iterdir() if "vision_backbone" in p.name and "checkpoint" in p.name)
        if checkpoint.is_dir()
        else []
    )
    if use_film is None:
        return bool(files)
    if use_film and not files:
        raise CheckpointError(
            f"use_film=True but {checkpoint} has no vision_backbone--<step>_checkpoint.pt (the FiLMed "
            "vision backbone finetune.py saves); copy it from the run or set use_film to null/false"
        )
    if not use_film and files:
        raise CheckpointError(
            f"use_film=False but {checkpoint} holds {files}: this is a FiLM checkpoint and running it "
            "without FiLM gives a policy it was never trained as; set use_film to null or true"
        )
    return use_film


class OFTModel(nn.Module):
    """VLA backbone + action head + proprio projector: one module, so quantization sees all of it."""

    def __init__(
        self, vla: OpenVLAModel, action_head: L1RegressionActionHead, proprio_projector: ProprioProjector
    ):
        super().__init__()
        self.vla = vla
        self.action_head = action_head
        self.proprio_projector = proprio_projector

    @property
    def use_film(self) -> bool:
        """Whether the vision towers are FiLM-conditioned on the instruction."""
        return isinstance(self.vla.vision_backbone, FiLMedPrismaticVisionBackbone)

    @torch.no_grad()
    def predict(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        proprio: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised action chunks (B, chunk, action_dim), float32.

        ``input_ids`` (B, L): the prompts, *right*-padded when their lengths differ, with
        ``attention_mask`` (B, L) 1 on real tokens (None: no padding).
        """
        head = self.action_head
        n_act = head.num_actions_chunk * head.action_dim
        b, width = input_ids.shape
        dev = input_ids.device
        lengths = [width] * b if attention_mask is None else attention_mask.sum(dim=1).tolist()
        # per row: prompt (len_b), n_act placeholder slots, </s>, then padding up to `total`
        total = width + n_act + 1
        cols = torch.arange(total, device=dev)[None]
        length = torch.tensor(lengths, device=dev)[:, None]
        ids = torch.full((b, total), PLACEHOLDER_ID, dtype=input_ids.dtype, device=dev)
        ids[:, :width] = torch.where(cols[:, :width] < length, input_ids, PLACEHOLDER_ID)
        ids = torch.where(cols == length + n_act, STOP_ID, ids)
        is_action = (cols >= length) & (cols < length + n_act)
        valid = cols <= length + n_act
        text = self.vla.language_model.get_input_embeddings()(ids)
        dtype = self.vla.compute_dtype
        if self.use_film:  # reference: mean of input_embeddings[~all_actions_mask], before zeroing
            # per row, with the B = 1 call's ops: (1, len_b + 1, D).mean(dim=1); no padding in it
            rows = [torch.cat([text[r : r + 1, :n], text[r : r + 1, n + n_act : n + n_act + 1]], dim=1)
                    for r, n in enumerate(lengths)]
            lang = torch.cat([row.mean(dim=1) for row in rows])
            vision = self.vla.projector(
                self.vla.vision_backbone(pixel_values.to(dtype), average_language_embedding=lang)
            )
        else:
            vision = self.vla.embed_images(pixel_values.to(dtype))
        text = text * (valid & ~is_action).to(text.dtype)[:, :, None]  # action slots (and padding) zeroed
        # Heads and their inputs run in the model's dtype, as the reference runs everything in one
        # dtype (bf16 releases); their weights went through bf16 at load, as the reference's.
        proprio_token = self.proprio_projector(proprio.to(dtype))
        patches = torch.cat([vision, proprio_token[:, None].to(vision.dtype)], dim=1)
        embeds = torch.cat([text[:, :1], patches, text[:, 1:]], dim=1)
        keys = torch.cat([valid[:, :1], valid.new_ones((b, patches.shape[1])), valid[:, 1:]], dim=1)
        seq = embeds.shape[1]
        mask = keys[:, None, None, :].expand(b, 1, seq, seq)  # bidirectional over the real tokens
        hidden = self.vla.language_model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        # = NUM_PATCHES + NUM_PROMPT_TOKENS of the reference, per row
        starts = [patches.shape[1] + n - 1 for n in lengths]
        action_hidden = torch.stack([hidden[r, s : s + n_act] for r, s in enumerate(starts)])
        out = head(action_hidden.to(dtype))
        return out.float()


class OFTInputs(NamedTuple):
    """Model inputs of one batched OFT call, on the model device (order = :meth:`OFTModel.predict`)."""

    input_ids: torch.Tensor  # (B, L) int64 prompt ids, right-padded
    pixel_values: torch.Tensor  # (B, 6 * n_cams, 224, 224) float32
    proprio: torch.Tensor  # (B, proprio_dim) float32, normalised
    attention_mask: torch.Tensor  # (B, L) int64, 1 on real tokens


class OpenVLAOFTPolicy(OpenVLAFamilyPolicy):
    """OpenVLA-OFT LIBERO policy: (8, 7) chunk per call from agentview + wrist + 8-D proprio."""

    name = "openvla_oft"
    action_unnorm_eps = 1e-8
    execution = ChunkExecution(mode="open_loop", replan_steps=8)  # the whole (8, 7) chunk, open loop
    quantization_skip = ("lm_head", "action_head", "proprio_projector", "scale", "shift")  # scale/shift: FiLM
    weight_paths = ("checkpoint", "base_checkpoint", "lora_adapter")

    def __init__(
        self,
        model: OFTModel,
        cfg: OpenVLAConfig,
        tokenizer: PromptTokenizer,
        pixels: PixelTransform,
        *,
        unnorm_key: str | None = None,
        center_crop: bool = True,
        image_size: int = REFERENCE_RENDER_SIZE,
        cameras: tuple[str, ...] = ("agentview", "wrist"),
        gripper: str = "libero",
        quantization_name: str = "none",
        device: torch.device | None = None,
    ) -> None:
        super().__init__(model, cfg, tokenizer, pixels, unnorm_key=unnorm_key, center_crop=center_crop,
                         gripper=gripper, quantization_name=quantization_name, device=device)
        proprio = cfg.norm_stats[self.unnorm_key].get("proprio")
        if not proprio or "q01" not in proprio:
            raise CheckpointError(f"statistics for {self.unnorm_key!r} lack proprio q01/q99 (needed by OFT)")
        self.proprio_stats = proprio
        head = model.action_head
        if head.action_dim != self.action_dim:
            raise CheckpointError(
                f"action head predicts {head.action_dim}-D actions, statistics have {self.action_dim}"
            )
        self.cameras = tuple(cameras)
        self.inputs = PolicyInputs(cameras=self.cameras, image_size=image_size, uses_state=True)

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        *,
        unnorm_key: str | None = None,
        center_crop: bool = True,
        device: str = "auto",
        image_size: int = REFERENCE_RENDER_SIZE,
        cameras: tuple[str, ...] | list[str] = ("agentview", "wrist"),
        lora_adapter: str | Path | None = None,
        num_actions_chunk: int = 8,
        use_film: bool | None = None,
        gripper: str = "libero",
        quantization: Mapping[str, Any] | None = None,
    ) -> OpenVLAOFTPolicy:
        """Load an OFT checkpoint directory.

        Args:
            checkpoint: Directory with the merged VLA (HF layout), ``action_head--*_checkpoint.pt``,
                ``proprio_projector--*_checkpoint.pt`` and ``dataset_statistics.json``.
            unnorm_key: Statistics key (e.g. ``libero_spatial_no_noops``); None if only one.
            center_crop: Reference center crop (the LIBERO OFT models require it).
            device: ``auto``/``cpu``/``cuda``.
            image_size: Env render size (256 = reference pixels; 224 = fast path).
            cameras: Third-person camera first, then wrist, as the reference.
            lora_adapter: A peft adapter dir to merge into the VLA weights. Leave None for
                released OFT checkpoints, whose weights are already merged (finetune.py saves
                both; merging again would apply the LoRA twice).
            num_actions_chunk: Chunk length the head was trained for (8 on LIBERO).
            use_film: FiLM language conditioning of the vision towers. None (default) = detect:
                on iff ``vision_backbone--*_checkpoint.pt`` is present. True without that file, or
                False with it, is a :class:`CheckpointError` (the reference would silently run a
                FiLM checkpoint unconditioned, or fail on a missing file).
            gripper: ``libero`` post-processing or ``raw``.
            quantization: Hydra quantization node (heads are kept unquantized, as the reference).
        """
        from vla_gym.quantization import apply_quantization

        path = Path(checkpoint).expanduser()
        if path.is_dir() and not oft_component_files(path):
            raise CheckpointError(
                f"{path} has no action_head--<step>_checkpoint.pt or "
                "proprio_projector--<step>_checkpoint.pt: it is not an OpenVLA-OFT checkpoint. "
                "For a plain OpenVLA checkpoint use policy=openvla."
            )
        head_file = find_component(path, "action_head")
        proj_file = find_component(path, "proprio_projector")
        film = resolve_use_film(path, use_film)
        dev = select_device(device)
        vla, cfg, hf_dir = load_openvla_model(path)
        if lora_adapter is not None:
            vla = merge_lora(vla, Path(lora_adapter).expanduser())
        if film:
            backbone = FiLMedPrismaticVisionBackbone(vla.vision_backbone, cfg.llm_dim, device="meta")
            load_film_backbone(backbone, find_component(path, "vision_backbone"), vla.compute_dtype)
            vla.vision_backbone = backbone
        head_state = load_torch_state_dict(head_file)
        action_dim = int(head_state["model.fc2.weight"].shape[0]) if "model.fc2.weight" in head_state else 7
        head = L1RegressionActionHead(cfg.llm_dim, action_dim=action_dim, num_actions_chunk=num_actions_chunk)
        proj_state = load_torch_state_dict(proj_file)
        proprio_dim = int(proj_state["fc1.weight"].shape[1]) if "fc1.weight" in proj_state else 8
        proj = ProprioProjector(cfg.llm_dim, proprio_dim)
        for module, state, file in ((head, head_state, head_file), (proj, proj_state, proj_file)):
            # as get_action_head / get_proprio_projector: a bf16 module, then loaded (the release's fp32
            # projector is rounded to bf16 there), then run in the compute dtype
            module.to(HEAD_LOAD_DTYPE)
            load_strict(module, state, file)
            module.to(vla.compute_dtype)
        model = OFTModel(vla, head, proj).eval()
        qname = apply_quantization(model, quantization, dev, skip_modules=cls.quantization_skip)
        tokenizer = PromptTokenizer.from_dir(hf_dir)
        pixels = PixelTransform.from_dir(hf_dir, n_towers=len(cfg.timm_model_ids))
        return cls(
            model,
            cfg,
            tokenizer,
            pixels,
            unnorm_key=unnorm_key,
            center_crop=center_crop,
            image_size=image_size,
            cameras=tuple(cameras),
            gripper=gripper,
            quantization_name=qname,
            device=dev,
        )

    def preprocess(self, observations: Sequence[Observation]) -> OFTInputs:
        """B observations -> right-padded prompt ids + mask (B, L), pixel_values (B, 6 * n_cams,
        224, 224), normalised proprio (B, 8)."""
        pixel_values = self.pixel_batch(observations, self.cameras)
        proprio = np.stack([
            decoding.normalize_proprio(np.asarray(o["state"], dtype=np.float64), self.proprio_stats)
            for o in observations
        ])
        proprio_t = torch.tensor(proprio, dtype=torch.float32, device=self.device)
        ids, mask = self.prompt_batch(observations, side="right")
        return OFTInputs(ids, pixel_values, proprio_t, mask)

    def forward(self, inputs: OFTInputs) -> np.ndarray:
        """Parallel decoding: the (B, chunk, action_dim) normalised actions of the L1 head."""
        return self.model.predict(*inputs).cpu().numpy()

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        """(B, chunk, action_dim) in [-1, 1] -> env actions (OFT un-normalisation, LIBERO gripper)."""
        return self.to_env_actions(raw)

    @property
    def chunk_size(self) -> int:
        """Actions per call: the head's chunk length (8 on LIBERO)."""
        return self.model.action_head.num_actions_chunk

__all__ = [
    "OFTModel",
    "OpenVLAOFTPolicy",
    "find_component",
    "merge_lora",
    "resolve_use_film",
]
