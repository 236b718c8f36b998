"""``OpenVLAPolicy``: the OpenVLA LIBERO reference eval behind the vla_gym :class:`Policy` API.

One call = one action (T = 1): reference image path (:mod:`.images`), prompt + ``<s>`` +
empty piece, greedy decoding of ``action_dim`` tokens over all logits, bin centers,
q01/q99 un-normalisation and the LIBERO gripper post-processing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from vla_gym.policies.openvla import decoding, images
from vla_gym.policies.openvla.config import OpenVLAConfig
from vla_gym.policies.openvla.errors import CheckpointError
from vla_gym.policies.openvla.loader import (
    build_on_meta,
    is_prismatic_run,
    load_config,
    load_hf_state_dict,
    load_into,
    load_prismatic_state_dict,
    materialize_buffers,
    read_json,
)
from vla_gym.policies.openvla.modeling import OpenVLAModel
from vla_gym.policies.openvla.processor import PixelTransform, PromptTokenizer

from vla_gym.policy import Observation, Policy, PolicyInfo, PolicyInputs

MODEL_IMAGE_SIZE = 224
REFERENCE_RENDER_SIZE = 256  # OpenVLA/OFT LIBERO evals render at 256, then resize to 224
OFT_COMPONENTS = ("action_head", "proprio_projector", "vision_backbone")  # <name>--<step>_checkpoint.pt


def oft_component_files(checkpoint: Path) -> list[str]:
    """Names of the OpenVLA-OFT component files (``action_head--<step>_checkpoint.pt``, ...) in a dir."""
    if not checkpoint.is_dir():
        return []
    return sorted(
        p.name
        for p in checkpoint.iterdir()
        if p.is_file() and p.name.endswith("_checkpoint.pt") and p.name.split("--")[0] in OFT_COMPONENTS
    )


@dataclass(frozen=True)
class GreedyDecode:
    """One greedy decoding with the logits behind each token (fidelity checks below token level)."""

    token_ids: np.ndarray  # (n,) int64: the generated ids, n = action_dim unless EOS came first
    logits: np.ndarray  # (n, padded vocab) float32: row i is the step whose argmax is token_ids[i]
    action: np.ndarray  # (1, action_dim) float32: the env action act() returns for these tokens


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use device=cpu or auto")
    return dev


def load_openvla_model(
    checkpoint: str | Path, base_checkpoint: str | Path | None = None
) -> tuple[OpenVLAModel, OpenVLAConfig, Path]:
    """Build the model from ``config.json`` and load the weights (HF release or Prismatic run).

    Returns the model (CPU, stored dtype), its config and the HF-format directory that holds
    the tokenizer and preprocessor files.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if is_prismatic_run(path):
        if base_checkpoint is None:
            raise CheckpointError(
                f"{path} is a Prismatic training run (checkpoints/latest-checkpoint.pt); it has no HF "
                "config, tokenizer or preprocessor. Pass base_checkpoint=<HF-format OpenVLA dir> "
                "(e.g. openvla-7b)."
            )
        hf_dir = Path(base_checkpoint).expanduser()
        raw = read_json(hf_dir / "config.json", "the base OpenVLA config")
        stats = path / "dataset_statistics.json"
        if stats.is_file():
            raw = {**raw, "norm_stats": read_json(stats, "action statistics")}
        cfg = OpenVLAConfig.from_dict(raw, source=str(hf_dir / "config.json"))
        state = load_prismatic_state_dict(path, cfg.use_fused_vision_backbone)
    else:
        hf_dir = path
        cfg = load_config(path)
        state = load_hf_state_dict(path)
    model = build_on_meta(lambda: OpenVLAModel(cfg))
    load_into(model, state, str(path))
    materialize_buffers(model)
    return model.eval(), cfg, hf_dir


class OpenVLAFamilyPolicy(Policy):
    """What OpenVLA and OpenVLA-OFT share: checkpoint statistics, a timed act(), info().

    ``act`` = :meth:`preprocess` -> :meth:`forward` -> :meth:`postprocess`; the three stages'
    wall times (ms) land in :attr:`last_timing` for ``benchmarks/policy_latency.py``.
    """

    name = ""

    def __init__(self, model: torch.nn.Module, cfg: OpenVLAConfig, tokenizer: PromptTokenizer,
                 pixels: PixelTransform, *, unnorm_key: str | None, center_crop: bool, gripper: str,
                 quantization_name: str, device: torch.device | None) -> None:
        if gripper not in ("libero", "raw"):
            raise ValueError(f"gripper must be 'libero' or 'raw', got {gripper!r}")
        self.model = model
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.pixels = pixels
        self.unnorm_key = decoding.resolve_unnorm_key(cfg.norm_stats, unnorm_key)
        self.stats = decoding.action_stats(cfg.norm_stats, self.unnorm_key)
        self.action_dim = int(self.stats["q01"].shape[0])
        self.center_crop = center_crop
        self.gripper = gripper
        self.quantization_name = quantization_name
        self.device = device or torch.device("cpu")
        self.last_timing: dict[str, float] = {}

    # stages -------------------------------------------------------------------------------
    def preprocess(self, observation: Observation) -> tuple[torch.Tensor, ...]:
        """Observation -> model inputs on the model device."""
        raise NotImplementedError

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
        """Model inputs -> raw model output (tokens or normalised actions) as numpy."""
        raise NotImplementedError

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw model output -> env actions, float32 (T, action_dim)."""
        raise NotImplementedError

    def prompt_ids(self, observation: Observation) -> torch.Tensor:
        """The reference prompt for the observation's instruction, tokenised, (1, L)."""
        return torch.tensor([self.tokenizer.encode_prompt(str(observation["instruction"]))], device=self.device)

    def camera_image(self, observation: Observation, camera: str) -> np.ndarray:
        """The reference-processed 224 image of one camera (orientation, JPEG, resize, crop)."""
        try:
            frame = observation["images"][camera]
        except KeyError as exc:
            raise KeyError(
                f"observation has no image for camera {camera!r}; build the env from policy.inputs"
            ) from exc
        return images.reference_image(np.asarray(frame), MODEL_IMAGE_SIZE, center_crop=self.center_crop)

    def to_env_actions(self, normalized: np.ndarray, eps: float = 0.0) -> np.ndarray:
        """Normalised actions in [-1, 1] -> env actions (q01/q99 + mask, LIBERO gripper)."""
        actions = decoding.unnormalize(normalized.astype(np.float64), self.stats, eps=eps)
        if self.gripper == "libero":
            actions = decoding.libero_gripper(actions)
        return actions.astype(np.float32)

    # Policy API ---------------------------------------------------------------------------
    def act(self, observation: Observation) -> np.ndarray:
        """An action chunk (T, action_dim) float32; stage timings (ms) in :attr:`last_timing`."""
        t0 = time.perf_counter()
        inputs = self.preprocess(observation)
        t1 = time.perf_counter()
        raw = self.forward(inputs)
        t2 = time.perf_counter()
        out = self.postprocess(raw)
        t3 = time.perf_counter()
        self.last_timing = {
            "preprocess_ms": 1e3 * (t1 - t0),
            "model_ms": 1e3 * (t2 - t1),
            "postprocess_ms": 1e3 * (t3 - t2),
        }
        return out

    @property
    def chunk_size(self) -> int:
        """Actions per call."""
        return 1

    def info(self) -> PolicyInfo:
        """Weights, dtype, quantization and device for ``results.json``."""
        from vla_gym.quantization import describe_weights

        nbytes, dtype = describe_weights(self.model)
        return PolicyInfo(
            name=self.name,
            action_dim=self.action_dim,
            chunk_size=self.chunk_size,
            weight_bytes=nbytes,
            dtype=dtype,
            quantization=self.quantization_name,
            device=str(self.device),
            extra={
                "unnorm_key": self.unnorm_key,
                "center_crop": self.center_crop,
                "image_size": self.inputs.image_size,
            },
        )

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self.model = None  # type: ignore[assignment]


class OpenVLAPolicy(OpenVLAFamilyPolicy):
    """OpenVLA (7B, or a tiny test build) acting in LIBERO like the reference eval."""

    name = "openvla"

    def __init__(
        self,
        model: OpenVLAModel,
        cfg: OpenVLAConfig,
        tokenizer: PromptTokenizer,
        pixels: PixelTransform,
        *,
        unnorm_key: str | None = None,
        center_crop: bool = True,
        image_size: int = REFERENCE_RENDER_SIZE,
        camera: str = "agentview",
        gripper: str = "libero",
        quantization_name: str = "none",
        device: torch.device | None = None,
    ) -> None:
        super().__init__(model, cfg, tokenizer, pixels, unnorm_key=unnorm_key, center_crop=center_crop,
                         gripper=gripper, quantization_name=quantization_name, device=device)
        self.camera = camera
        self.inputs = PolicyInputs(cameras=(camera,), image_size=image_size, uses_state=False)

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        *,
        unnorm_key: str | None = None,
        center_crop: bool = True,
        device: str = "auto",
        image_size: int = REFERENCE_RENDER_SIZE,
        base_checkpoint: str | Path | None = None,
        camera: str = "agentview",
        gripper: str = "libero",
        quantization: Mapping[str, Any] | None = None,
    ) -> OpenVLAPolicy:
        """Load a local checkpoint directory; ``quantization`` is the Hydra quantization node.

        Args:
            checkpoint: HF-format release dir, or a Prismatic run dir (then ``base_checkpoint``).
            unnorm_key: Dataset statistics to un-normalise with; ``None`` only when there is one.
            center_crop: Reference center crop (area 0.9); the LIBERO fine-tunes need it.
            device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
            image_size: Size the env renders at: 256 = reference pixels (default); 224 = fast
                path (no resize, slightly different pixels; see README).
            base_checkpoint: HF-format dir giving config/tokenizer/processor for a Prismatic run.
            camera: Camera to read (``agentview`` in the reference).
            gripper: ``libero`` (reference post-processing to -1 open / +1 close) or ``raw``.
            quantization: Hydra node ``{name: none|fp16|bf16|int8|int4, ...}`` or None.
        """
        from vla_gym.quantization import apply_quantization

        oft_files = oft_component_files(Path(checkpoint).expanduser())
        if oft_files:
            raise CheckpointError(
                f"{checkpoint} is an OpenVLA-OFT checkpoint (it has {oft_files}); the OpenVLA policy "
                "would ignore its action head and proprio projector and decode tokens it was not trained "
                "to emit. Load it with policy=openvla_oft."
            )
        dev = resolve_device(device)
        model, cfg, hf_dir = load_openvla_model(checkpoint, base_checkpoint)
        tokenizer = PromptTokenizer.from_dir(hf_dir)
        pixels = PixelTransform.from_dir(hf_dir, n_towers=len(cfg.timm_model_ids))
        qname = apply_quantization(model, quantization, dev)
        return cls(
            model,
            cfg,
            tokenizer,
            pixels,
            unnorm_key=unnorm_key,
            center_crop=center_crop,
            image_size=image_size,
            camera=camera,
            gripper=gripper,
            quantization_name=qname,
            device=dev,
        )

    def preprocess(self, observation: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """Observation -> (input_ids (1, L), pixel_values (1, 6, 224, 224)) on the model device."""
        img = self.camera_image(observation, self.camera)
        pixel_values = self.pixels(img)[None].to(self.device)
        return self.prompt_ids(observation), pixel_values

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
        """Greedy generation; the last ``action_dim`` ids, as the reference takes them."""
        ids, pixel_values = inputs
        generated = self.model.generate_greedy(ids, pixel_values, self.action_dim, self.tokenizer.eos_id)
        # As the reference: the last action_dim ids (prompt ids if EOS stopped generation early).
        return generated[0, -self.action_dim :].cpu().numpy()

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        """Action token ids -> env action (float32 (1, action_dim))."""
        return self.decode(raw)

    def decode_with_logits(self, observation: Observation) -> GreedyDecode:
        """What :meth:`act` computes for ``observation``, plus the per-step logits of greedy decoding.

        Same inputs, same decoding loop (argmax over all logits), same action; the logits let
        tests and fidelity checks compare against a reference by margin, not only by token.
        """
        ids, pixel_values = self.preprocess(observation)
        generated, logits = self.model.generate_greedy_with_logits(
            ids, pixel_values, self.action_dim, self.tokenizer.eos_id
        )
        return GreedyDecode(
            token_ids=generated[0, ids.shape[1] :].cpu().numpy(),
            logits=logits[0].cpu().numpy(),
            action=self.decode(generated[0, -self.action_dim :].cpu().numpy()),
        )

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Last ``action_dim`` generated ids -> env action (float32 (1, action_dim))."""
        normalized = decoding.tokens_to_normalized_actions(
            token_ids, self.cfg.action_vocab_size, self.cfg.n_action_bins
        )
        return self.to_env_actions(normalized)[None]
