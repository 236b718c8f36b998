"""``OpenVLAPolicy``: the OpenVLA LIBERO reference eval behind the vla_gym :class:`Policy` API.

One call = one action per observation (T = 1): reference image path (:mod:`.images`), prompt +
``<s>`` + empty piece, greedy decoding of ``action_dim`` tokens over all logits, bin centers,
q01/q99 un-normalisation and the LIBERO gripper post-processing.

Batching (v2 API): B observations go through the model in one call. Prompts of different
lengths are *left*-padded (the patches go after each row's own ``<s>``, padding is masked and
position ids count real tokens only), so every row is decoded greedily as if alone. Measured on
the tiny checkpoint (tests/policies/test_openvla.py): the tokens, hence the actions, of row b
equal those of a B = 1 call; the per-step logits differ by <= 4e-7 in fp32 and by at most one
bf16 ulp in bf16 (the batched matmuls sum in another order than B = 1's matrix-vector products).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

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
)
from vla_gym.policies.toolkit.safe_load import read_json
from vla_gym.policies.openvla.modeling import OpenVLAModel, generated_lengths
from vla_gym.policies.openvla.processor import PixelTransform, PromptTokenizer
from vla_gym.policies.toolkit.device import select_device
from vla_gym.policies.toolkit.norm_stats import NormKind, NormStats

from vla_gym.policy import (
    ActionChunk,
    ChunkExecution,
    Observation,
    Policy,
    PolicyInfo,
    PolicyInputs,
    StageTimer,
    reset_targets,
    resolve_env_ids,
)

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


class OpenVLAInputs(NamedTuple):
    """Model inputs of one batched OpenVLA call, on the model device."""

    input_ids: torch.Tensor  # (B, L) int64 prompt ids, left-padded
    attention_mask: torch.Tensor  # (B, L) int64, 1 on real tokens
    pixel_values: torch.Tensor  # (B, 6, 224, 224) float32


@dataclass(frozen=True)
class GreedyDecode:
    """One greedy decoding with the logits behind each token (fidelity checks below token level)."""

    token_ids: np.ndarray  # (n,) int64: the generated ids, n = action_dim unless EOS came first
    logits: np.ndarray  # (n, padded vocab) float32: row i is the step whose argmax is token_ids[i]
    action: np.ndarray  # (1, action_dim) float32: the env action act() returns for these tokens


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
    """What OpenVLA and OpenVLA-OFT share: checkpoint statistics, a timed batched act(), info().

    ``act`` = :meth:`preprocess` -> :meth:`forward` -> :meth:`postprocess`, each over the whole
    batch; their wall times (ms) are returned in ``ActionChunk.info["timing_ms"]``. Both
    policies are stateless across steps and episodes, so :meth:`reset` has nothing to forget.
    """

    name = ""
    action_unnorm_eps = 0.0
    """Added to ``q99 - q01`` when un-normalising actions (OpenVLA 0; OFT's reference adds 1e-8)."""
    reference_scene_seed = 0  # their LIBERO evals call env.seed(0) once per task
    loads_weights = True
    stateless_act = True  # act reads only its observations (greedy / L1 head, no RNG, no history)

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
        # the family's action normalisation is quantile bounds; NormStats refuses other kinds
        self.action_norm = NormStats.from_mapping(
            NormKind.BOUNDS_Q01_Q99, decoding.action_stats(cfg.norm_stats, self.unnorm_key),
            eps=self.action_unnorm_eps, source=f"norm_stats[{self.unnorm_key!r}].action",
        ).expect(NormKind.BOUNDS_Q01_Q99, self.name or type(self).__name__)
        self.action_dim = self.action_norm.dim
        self.center_crop = center_crop
        self.gripper = gripper
        self.quantization_name = quantization_name
        self.device = device or torch.device("cpu")

    # stages -------------------------------------------------------------------------------
    def preprocess(self, observations: Sequence[Observation]) -> tuple[torch.Tensor, ...]:
        """B observations -> batched model inputs on the model device."""
        raise NotImplementedError

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
        """Model inputs -> raw model output per row (tokens or normalised actions) as numpy."""
        raise NotImplementedError

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw model output -> env actions, float32 (B, T, action_dim)."""
        raise NotImplementedError

    def prompt_batch(
        self, observations: Sequence[Observation], side: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference prompts of the instructions, tokenised and padded on ``side``.

        Returns ``(ids, mask)``, both (B, L) int64 on the model device; ``mask`` is 1 on real
        tokens. The pad id is never attended to (any id would do; the checkpoint's pad id is used).
        """
        prompts = [self.tokenizer.encode_prompt(str(o["instruction"])) for o in observations]
        width = max(len(p) for p in prompts)
        pad = int(self.cfg.text_config.get("pad_token_id") or 0)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, prompt in enumerate(prompts):
            span = slice(width - len(prompt), width) if side == "left" else slice(0, len(prompt))
            ids[b, span] = torch.tensor(prompt, dtype=torch.long)
            mask[b, span] = 1
        return ids.to(self.device), mask.to(self.device)

    def pixel_batch(self, observations: Sequence[Observation], cameras: Sequence[str]) -> torch.Tensor:
        """(B, 3 * towers * len(cameras), S, S) float32 on the model device: per row, each camera's
        reference image normalised for every tower, written straight into its channel slice."""
        for obs in observations:
            for cam in cameras:
                if cam not in obs["images"]:
                    raise KeyError(
                        f"observation has no image for camera {cam!r}; build the env from policy.inputs"
                    )
        # Serial: a 2-thread pool measured slower (median 3.0 vs 2.6 ms on 2 cores) for ~1.1 ms per camera.
        side = self.pixels.sizes[0]
        n_cams, n_ch = len(cameras), self.pixels.channels
        pixel_values = torch.empty((len(observations), n_ch * n_cams, side, side), dtype=torch.float32)
        for b, obs in enumerate(observations):
            slices = pixel_values[b].numpy().reshape(n_cams, n_ch, side, side)
            for i, cam in enumerate(cameras):
                img = self.camera_image(obs, cam)
                if not self.pixels.into(img, slices[i]):
                    slices[i] = self.pixels(img).numpy()
        return pixel_values.to(self.device)

    def camera_image(self, observation: Observation, camera: str) -> np.ndarray:
        """The reference-processed 224 image of one camera (orientation, JPEG, resize, crop)."""
        try:
            frame = observation["images"][camera]
        except KeyError as exc:
            raise KeyError(
                f"observation has no image for camera {camera!r}; build the env from policy.inputs"
            ) from exc
        return images.reference_image(np.asarray(frame), MODEL_IMAGE_SIZE, center_crop=self.center_crop)

    def to_env_actions(self, normalized: np.ndarray) -> np.ndarray:
        """Normalised actions in [-1, 1] -> env actions (q01/q99 + mask, LIBERO gripper)."""
        actions = self.action_norm.unnormalize(normalized)
        if self.gripper == "libero":
            actions = decoding.libero_gripper(actions)
        return actions.astype(np.float32)

    # Policy API ---------------------------------------------------------------------------
    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None) -> ActionChunk:
        """Chunks ``(B, T, action_dim)`` float32 for B observations, in one model call.

        ``info["timing_ms"]`` holds the wall time of ``preprocess`` / ``model`` /
        ``postprocess`` for the whole batch.
        """
        resolve_env_ids(observations, env_ids)
        timer = StageTimer()
        with timer("preprocess"):
            inputs = self.preprocess(observations)
        with timer("model"):
            raw = self.forward(inputs)
        with timer("postprocess"):
            actions = self.postprocess(raw)
        return ActionChunk(actions, info={"timing_ms": dict(timer.ms)})

    def reset(self, env_ids: Sequence[int] | None = None, seeds: Sequence[int | None] | None = None) -> None:
        """Nothing to forget: every call depends on its observation only (arguments are validated)."""
        reset_targets(env_ids, seeds)

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
    execution = ChunkExecution(mode="open_loop", replan_steps=1)  # one action per query
    quantization_skip = ("lm_head",)  # as the reference's bitsandbytes load

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
                path (no resize, slightly different pixels; see docs/explanation/fidelity.md).
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
        dev = select_device(device)
        model, cfg, hf_dir = load_openvla_model(checkpoint, base_checkpoint)
        tokenizer = PromptTokenizer.from_dir(hf_dir)
        pixels = PixelTransform.from_dir(hf_dir, n_towers=len(cfg.timm_model_ids))
        qname = apply_quantization(model, quantization, dev, skip_modules=cls.quantization_skip)
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

    def preprocess(self, observations: Sequence[Observation]) -> OpenVLAInputs:
        """B observations -> left-padded prompt ids + mask (B, L), pixel_values (B, 6, 224, 224)."""
        pixel_values = self.pixel_batch(observations, (self.camera,))
        ids, mask = self.prompt_batch(observations, side="left")
        return OpenVLAInputs(ids, mask, pixel_values)

    def forward(self, inputs: OpenVLAInputs) -> np.ndarray:
        """Greedy generation; per row the last ``action_dim`` ids, as the reference takes them."""
        generated = self.model.generate_greedy(
            inputs.input_ids, inputs.pixel_values, self.action_dim, self.tokenizer.eos_id,
            inputs.attention_mask,
        )
        return self._last_ids(inputs, generated)

    def _last_ids(self, inputs: OpenVLAInputs, generated: torch.Tensor) -> np.ndarray:
        """(B, action_dim): per row the last ``action_dim`` ids of prompt + generated ids (prompt ids
        too if EOS stopped that row early, as the reference's ``generated[0, -action_dim:]``)."""
        width = inputs.input_ids.shape[1]
        lengths = generated_lengths(generated, width, self.tokenizer.eos_id)
        rows = []
        for b, n in enumerate(lengths):
            prompt = generated[b, :width][inputs.attention_mask[b].bool()]
            rows.append(torch.cat([prompt, generated[b, width : width + n]])[-self.action_dim :])
        return torch.stack(rows).cpu().numpy()

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        """Action token ids (B, action_dim) -> env actions (float32 (B, 1, action_dim))."""
        return self.decode(raw)

    def decode_with_logits(self, observation: Observation) -> GreedyDecode:
        """What :meth:`act` computes for one observation, plus the per-step logits of greedy decoding.

        Same inputs, same decoding loop (argmax over all logits), same action; the logits let
        tests and fidelity checks compare against a reference by margin, not only by token.
        """
        inputs = self.preprocess([observation])
        generated, logits = self.model.generate_greedy_with_logits(
            inputs.input_ids, inputs.pixel_values, self.action_dim, self.tokenizer.eos_id,
            inputs.attention_mask,
        )
        width = inputs.input_ids.shape[1]
        (n,) = generated_lengths(generated, width, self.tokenizer.eos_id)
        return GreedyDecode(
            token_ids=generated[0, width : width + n].cpu().numpy(),
            logits=logits[0, :n].cpu().numpy(),
            action=self.decode(self._last_ids(inputs, generated)[0]),
        )

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Action ids -> env actions, one (1, action_dim) chunk per row.

        (action_dim,) -> (1, action_dim); (B, action_dim) -> (B, 1, action_dim).
        """
        normalized = decoding.tokens_to_normalized_actions(
            token_ids, self.cfg.action_vocab_size, self.cfg.n_action_bins
        )
        return self.to_env_actions(normalized)[..., None, :]
