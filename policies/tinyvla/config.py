"""TinyVLA's ``config.json`` (``model_type: llava_pythia``) read into plain, checked settings.

The release keeps GPT-NeoX keys at the top level, the CLIP tower and projector under
``vision_config.{vision_tower, mm_projector}`` (no top-level ``mm_vision_tower``, unlike stock
LLaVA), and the action keys that ``train_tinyvla.py`` adds (``action_head_type``,
``action_dim``, ``state_dim``, ``chunk_size``, ``concat``). Defaults are the original's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vla_gym.policies.toolkit.errors import CheckpointError
from vla_gym.policies.toolkit.safe_load import read_json

ACTION_KEYS = ("action_head_type", "action_dim", "state_dim", "chunk_size")
# keys of vision_config.vision_tower that are LLaVA-Pythia's, not CLIPVisionConfig's
_TOWER_EXTRA = ("mm_vision_select_feature", "mm_vision_select_layer", "vision_model_name_or_path", "concat",
                "model_type", "architectures", "transformers_version")
_LLM_EXTRA = ("vision_config", "concat", "model_type", "architectures", "auto_map", "transformers_version",
              *ACTION_KEYS, "act")


@dataclass(frozen=True)
class TinyVLAConfig:
    """What the adapter needs from ``config.json``; ``raw`` keeps the whole file."""

    raw: dict[str, Any]
    source: Path
    action_head_type: str
    action_dim: int
    state_dim: int
    chunk_size: int
    concat: str
    select_layer: int
    select_feature: str
    projector_type: str

    @property
    def hidden_size(self) -> int:
        """Width of the LLM's hidden state."""
        return int(self.raw["hidden_size"])

    def llm_config(self) -> Any:
        """``transformers.GPTNeoXConfig`` from the top-level keys (sdpa attention)."""
        from transformers import GPTNeoXConfig

        kw = {k: v for k, v in self.raw.items() if k not in _LLM_EXTRA}
        cfg = GPTNeoXConfig(**kw)
        cfg._attn_implementation = "sdpa"
        return cfg

    def vision_config(self) -> Any:
        """``transformers.CLIPVisionConfig`` from ``vision_config.vision_tower``."""
        from transformers import CLIPVisionConfig

        tower = self.raw["vision_config"]["vision_tower"]
        cfg = CLIPVisionConfig(**{k: v for k, v in tower.items() if k not in _TOWER_EXTRA})
        cfg._attn_implementation = "sdpa"
        return cfg

    @property
    def mm_hidden_size(self) -> int:
        """Width of the vision tower's features fed to the projector."""
        return int(self.raw["vision_config"]["mm_projector"].get("mm_hidden_size",
                                                                 self.raw["vision_config"]["vision_tower"]["hidden_size"]))




def has_action_keys(file: Path) -> bool:
    """Whether ``file`` is a fine-tuned TinyVLA config (has ``action_head_type``), not a base VLM's."""
    return file.is_file() and "action_head_type" in read_json(file, "TinyVLA config.json")


def parse_config(file: Path) -> TinyVLAConfig:
    """Read and check a TinyVLA ``config.json`` (action keys, vision and projector sections)."""
    raw = read_json(file, "TinyVLA config.json")
    fix = "point policy.checkpoint at a TinyVLA run (its config.json is written by train_tinyvla.py)"
    vision = raw.get("vision_config")
    if not isinstance(vision, dict) or not isinstance(vision.get("vision_tower"), dict) \
            or not isinstance(vision.get("mm_projector"), dict):
        raise CheckpointError(f"{file}: needs vision_config.vision_tower and vision_config.mm_projector; {fix}")
    tower = vision["vision_tower"]
    name = str(tower.get("vision_model_name_or_path", "clip"))
    if "clip" not in name:
        raise CheckpointError(f"{file}: vision tower {name!r} is not CLIP (only CLIP towers are supported; "
                              "SigLIP towers of llava-pythia are not implemented)")
    head = str(raw.get("action_head_type", "droid_diffusion"))
    if head != "droid_diffusion":
        raise CheckpointError(f"{file}: action_head_type={head!r}; only the droid_diffusion (UNet) head is "
                              "supported")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        if key not in raw:
            raise CheckpointError(f"{file}: GPT-NeoX key {key!r} is missing; {fix}")
    chunk = int(raw.get("chunk_size", 16))
    if chunk <= 0 or chunk % 4:
        raise CheckpointError(f"{file}: chunk_size={chunk} is not a positive multiple of 4; the UNet head "
                              "downsamples twice by 2. Fix chunk_size in config.json to the training value.")
    concat = str(raw.get("concat", "None"))
    if concat not in ("token_cat", "None"):
        raise CheckpointError(f"{file}: concat={concat!r}; only token_cat (cameras along the token axis) is "
                              "supported")
    projector = str(vision["mm_projector"].get("mm_projector_type", "linear"))
    return TinyVLAConfig(
        raw=raw, source=Path(file), action_head_type=head, action_dim=int(raw.get("action_dim", 10)),
        state_dim=int(raw.get("state_dim", 7)), chunk_size=chunk, concat=concat,
        select_layer=int(tower.get("mm_vision_select_layer", -2)),
        select_feature=str(tower.get("mm_vision_select_feature", "patch")), projector_type=projector,
    )
