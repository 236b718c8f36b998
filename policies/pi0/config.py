"""What a pi0 / pi0.5 checkpoint directory is: its layout, variant and training recipe (provenance).

Two layouts, one loader:

- **openpi-PyTorch** (``examples/convert_jax_model_to_pytorch.py``): ``model.safetensors`` +
  ``config.json`` ``{action_dim, action_horizon, paligemma_variant, action_expert_variant,
  precision}`` + ``assets/<asset_id>/norm_stats.json``. The files do not name the training
  config, so the recipe (``pi0_libero`` / ``pi05_libero``) is ``policy.openpi_config`` or, when
  null, the LIBERO recipe of the detected variant; it must agree with the weights and the horizon.
- **LeRobot** ``pretrained_model/`` (draccus ``config.json`` with ``type: pi0 | pi05``,
  ``model.safetensors`` with the ``model.`` prefix, ``policy_{pre,post}processor.json`` and
  their normaliser ``.safetensors`` state files). A training output dir holding
  ``pretrained_model/`` is accepted too.

The variant is read from the weights (pi0.5: AdaRMS ``dense`` keys in the action expert; pi0:
``state_proj``); a configured ``variant`` (``policy=pi0`` vs ``policy=pi05``) or a LeRobot
``type`` that disagrees is an error. Orbax (JAX) checkpoints are refused with the conversion command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_gym.policies.toolkit.errors import CheckpointError
from vla_gym.policies.toolkit.norm_stats import NormKind
from vla_gym.policies.toolkit.safe_load import read_json

WEIGHTS = "model.safetensors"
LAYOUTS = ("openpi", "lerobot")
VARIANTS = ("pi0", "pi05")
MODEL_ACTION_DIM = 32
DEFAULT_NUM_STEPS = 10
OPENPI_IMAGE_SLOTS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


@dataclass(frozen=True)
class OpenpiRecipe:
    """The LIBERO facts of one openpi training config (``training/config.py``)."""

    variant: str
    action_horizon: int
    prompt_format: str
    max_token_len: int
    delta_actions: bool  # LeRobotLiberoDataConfig(extra_delta_transform=...): a[:6] += state[:6] on output
    asset_id: str = "physical-intelligence/libero"  # = the data config's repo_id


OPENPI_RECIPES: dict[str, OpenpiRecipe] = {
    "pi0_libero": OpenpiRecipe("pi0", 50, "pi0", 48, delta_actions=True),
    "pi05_libero": OpenpiRecipe("pi05", 10, "pi05_libero", 200, delta_actions=False),
}
LIBERO_RECIPE = {"pi0": "pi0_libero", "pi05": "pi05_libero"}


@dataclass(frozen=True)
class Pi0Checkpoint:
    """Everything the policy needs to know about a checkpoint dir before building the network.

    Attributes:
        path: The directory holding ``model.safetensors``.
        layout: ``openpi`` or ``lerobot``.
        variant: ``pi0`` or ``pi05`` (from the weights).
        provenance: The recipe: an openpi config name, or ``lerobot:pi0`` / ``lerobot:pi05``.
        action_horizon: Chunk length (openpi ``action_horizon``, LeRobot ``chunk_size``).
        prompt_format: Name in :data:`~vla_gym.policies.pi0.prompts.PROMPT_FORMATS`.
        max_token_len: Tokenizer length (48 pi0, 200 pi0.5).
        delta_actions: Add the state to action dims 0-5 on output (openpi ``pi0_libero``).
        state_kind, action_kind: Normalisation kinds the stats must have.
        norm_rule: ``openpi`` or ``lerobot`` formulas.
        reference_precision: ``bfloat16`` or ``float32``: what the reference runs this checkpoint in.
        image_slots: The model's camera slots in order (openpi: base, left wrist, right wrist).
        output_dim: Actions returned (LIBERO 7).
        n_action_steps: LeRobot's executed actions per chunk (None for openpi: the LIBERO client's 5).
        asset_id: openpi ``assets/<asset_id>`` of the norm stats (None for LeRobot).
        tokenizer_repo: LeRobot: the hub repo its tokenizer step loads (``tokenizer_name``), looked up
            in the local HF cache; None for openpi.
        num_steps: Euler steps of the flow-matching integration.
        variants: ``(paligemma_variant, action_expert_variant)`` named by the config.
        config: The raw ``config.json`` (empty if absent).
    """

    path: Path
    layout: str
    variant: str
    provenance: str
    action_horizon: int
    prompt_format: str
    max_token_len: int
    delta_actions: bool
    state_kind: NormKind
    action_kind: NormKind
    norm_rule: str
    reference_precision: str
    image_slots: tuple[str, ...]
    output_dim: int = 7
    n_action_steps: int | None = None
    asset_id: str | None = None
    tokenizer_repo: str | None = None
    num_steps: int = DEFAULT_NUM_STEPS
    variants: tuple[str, str] = ("gemma_2b", "gemma_300m")
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def pi05(self) -> bool:
        """Whether the checkpoint is a pi0.5 (AdaRMS time conditioning) rather than a pi0."""
        return self.variant == "pi05"

    @property
    def weights(self) -> Path:
        """The checkpoint's ``model.safetensors``."""
        return self.path / WEIGHTS




def weight_keys(file: Path) -> list[str]:
    """Tensor names of a safetensors file, read from its header only."""
    from safetensors import SafetensorError, safe_open

    if not file.is_file():
        raise CheckpointError(f"weight file {file} is missing; re-download or re-convert the checkpoint")
    try:
        with safe_open(str(file), framework="pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"weight file {file} is corrupted or truncated ({exc}); re-download it") from exc


def variant_from_keys(keys: list[str], source: Path) -> str:
    """pi0.5 iff the action expert's norms are AdaRMS (``...gemma_expert.model.norm.dense.weight``)."""
    names = {k[len("model."):] if k.startswith("model.") else k for k in keys}
    adarms = any(k.startswith("paligemma_with_expert.gemma_expert.") and ".dense." in k for k in names)
    if adarms:
        return "pi05"
    if "state_proj.weight" in names:
        return "pi0"
    raise CheckpointError(
        f"{source} has neither AdaRMS expert norms (pi0.5) nor state_proj (pi0); it is not a pi0/pi0.5 "
        "checkpoint in the openpi-PyTorch or LeRobot naming")


def resolve_dir(checkpoint: str | Path) -> Path:
    """The dir with the weights (a LeRobot training output's ``pretrained_model/`` is followed)."""
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if not (path / WEIGHTS).is_file() and (path / "pretrained_model" / WEIGHTS).is_file():
        path = path / "pretrained_model"
    if not (path / WEIGHTS).is_file():
        if (path / "params").is_dir():
            raise CheckpointError(
                f"{path} is an openpi JAX (Orbax) checkpoint; vla_gym reads the PyTorch conversion. Run openpi's "
                "`python examples/convert_jax_model_to_pytorch.py --checkpoint_dir <dir> --config_name <cfg> "
                "--output_path <out>` and copy <dir>/assets into <out>")
        raise CheckpointError(f"{path} has no {WEIGHTS}: not an openpi-PyTorch or LeRobot pi0/pi0.5 checkpoint")
    return path


def _check_variant(detected: str, configured: str | None, source: str) -> None:
    if configured is not None and configured not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS} or null, got {configured!r}")
    if configured is not None and configured != detected:
        raise CheckpointError(
            f"{source} holds a {detected} model but variant={configured!r} was configured; use policy={detected}")


def read_checkpoint(checkpoint: str | Path, *, variant: str | None = None,
                    openpi_config: str | None = None) -> Pi0Checkpoint:
    """Detect layout, variant and recipe of a checkpoint dir (reads configs and the weight header only)."""
    path = resolve_dir(checkpoint)
    cfg_file = path / "config.json"
    cfg = read_json(cfg_file, "checkpoint config") if cfg_file.is_file() else {}
    detected = variant_from_keys(weight_keys(path / WEIGHTS), path / WEIGHTS)
    if "type" in cfg:
        if openpi_config is not None:
            raise CheckpointError(f"{path} is a LeRobot checkpoint; openpi_config={openpi_config!r} applies to "
                                  "openpi-PyTorch dirs only (set it to null)")
        return _lerobot(path, cfg, detected, variant)
    return _openpi(path, cfg, detected, variant, openpi_config)


def _openpi(path: Path, cfg: dict[str, Any], detected: str, variant: str | None,
            openpi_config: str | None) -> Pi0Checkpoint:
    _check_variant(detected, variant, str(path))
    name = openpi_config or LIBERO_RECIPE[detected]
    if name not in OPENPI_RECIPES:
        raise CheckpointError(f"openpi_config={name!r} is not a known LIBERO recipe; valid: {sorted(OPENPI_RECIPES)}")
    recipe = OPENPI_RECIPES[name]
    if recipe.variant != detected:
        raise CheckpointError(f"openpi_config={name!r} is a {recipe.variant} recipe but {path} holds a {detected} "
                              f"model; use openpi_config={LIBERO_RECIPE[detected]!r} (or null)")
    horizon = int(cfg.get("action_horizon", recipe.action_horizon))
    if horizon != recipe.action_horizon:
        raise CheckpointError(f"{path / 'config.json'} says action_horizon={horizon} but {name} was trained with "
                              f"{recipe.action_horizon}; set policy.openpi_config to the right recipe")
    action_dim = int(cfg.get("action_dim", MODEL_ACTION_DIM))
    if action_dim != MODEL_ACTION_DIM:
        raise CheckpointError(f"{path / 'config.json'}: action_dim={action_dim}, openpi models use {MODEL_ACTION_DIM}")
    kind = NormKind.MEAN_STD if detected == "pi0" else NormKind.BOUNDS_Q01_Q99
    return Pi0Checkpoint(
        path=path, layout="openpi", variant=detected, provenance=name, action_horizon=horizon,
        prompt_format=recipe.prompt_format, max_token_len=recipe.max_token_len,
        delta_actions=recipe.delta_actions, state_kind=kind, action_kind=kind, norm_rule="openpi",
        reference_precision="bfloat16",  # policy_config.py: to_bfloat16_for_selected_params("bfloat16") always
        image_slots=OPENPI_IMAGE_SLOTS, asset_id=recipe.asset_id,
        variants=(str(cfg.get("paligemma_variant", "gemma_2b")), str(cfg.get("action_expert_variant", "gemma_300m"))),
        config=cfg,
    )


def _lerobot_kind(cfg: dict[str, Any], feature: str, path: Path) -> NormKind:
    from vla_gym.policies.pi0.stats import LEROBOT_KINDS

    mode = (cfg.get("normalization_mapping") or {}).get(feature)
    if str(mode) not in LEROBOT_KINDS:
        raise CheckpointError(f"{path / 'config.json'}: normalization_mapping[{feature!r}] = {mode!r}; "
                              f"supported: {sorted(LEROBOT_KINDS)}")
    return LEROBOT_KINDS[str(mode)]


def _lerobot_tokenizer_repo(path: Path) -> str | None:
    """``tokenizer_name`` of the preprocessor's ``tokenizer_processor`` step (None if not named)."""
    from vla_gym.policies.pi0.stats import pipeline_step

    pipeline = path / "policy_preprocessor.json"
    if not pipeline.is_file():
        return None
    name = (pipeline_step(pipeline, "tokenizer_processor").get("config") or {}).get("tokenizer_name")
    return str(name) if name else None


def _lerobot(path: Path, cfg: dict[str, Any], detected: str, variant: str | None) -> Pi0Checkpoint:
    source = path / "config.json"
    kind = str(cfg["type"])
    if kind not in VARIANTS:
        raise CheckpointError(f"{source}: type={kind!r}; this adapter reads LeRobot pi0 and pi05 checkpoints")
    if kind != detected:
        raise CheckpointError(f"{source} says type={kind!r} but {path / WEIGHTS} holds a {detected} model")
    _check_variant(detected, variant, str(path))
    if cfg.get("use_proprioceptive_memory") or cfg.get("use_visual_memory"):
        raise CheckpointError(f"{source}: MEM observation memory (use_*_memory) is not supported by this adapter")
    if (cfg.get("rtc_config") or {}).get("enabled"):
        raise CheckpointError(f"{source}: real-time chunking (rtc_config.enabled) is not supported by this adapter")
    if cfg.get("use_relative_actions"):
        raise CheckpointError(f"{source}: use_relative_actions=true is not supported by this adapter")
    features = cfg.get("input_features") or {}
    images = [k for k, v in features.items() if isinstance(v, dict) and v.get("type") == "VISUAL"]
    # validate_features() adds empty_camera_i to input_features, and saved configs already hold them
    images += [k for i in range(int(cfg.get("empty_cameras", 0)))
               if (k := f"observation.images.empty_camera_{i}") not in images]
    out = (cfg.get("output_features") or {}).get("action") or {}
    output_dim = int((out.get("shape") or [7])[0])
    for key in ("max_state_dim", "max_action_dim"):
        if int(cfg.get(key, MODEL_ACTION_DIM)) != MODEL_ACTION_DIM:
            raise CheckpointError(f"{source}: {key}={cfg[key]}; the released models use {MODEL_ACTION_DIM}")
    dtype = str(cfg.get("dtype", "float32"))
    if dtype not in ("bfloat16", "float32"):
        raise CheckpointError(f"{source}: dtype={dtype!r}; LeRobot allows bfloat16 or float32")
    chunk = int(cfg.get("chunk_size", 50))
    return Pi0Checkpoint(
        path=path, layout="lerobot", variant=detected, provenance=f"lerobot:{kind}", action_horizon=chunk,
        prompt_format="lerobot_pi0" if kind == "pi0" else "pi05_state",
        max_token_len=int(cfg.get("tokenizer_max_length", 48 if kind == "pi0" else 200)), delta_actions=False,
        state_kind=_lerobot_kind(cfg, "STATE", path), action_kind=_lerobot_kind(cfg, "ACTION", path),
        norm_rule="lerobot", reference_precision=dtype, image_slots=tuple(images), output_dim=output_dim,
        n_action_steps=int(cfg.get("n_action_steps", chunk)), tokenizer_repo=_lerobot_tokenizer_repo(path),
        num_steps=int(cfg.get("num_inference_steps", DEFAULT_NUM_STEPS)),
        variants=(str(cfg.get("paligemma_variant", "gemma_2b")), str(cfg.get("action_expert_variant", "gemma_300m"))),
        config=cfg,
    )
