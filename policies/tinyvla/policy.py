"""``TinyVLAPolicy``: TinyVLA (LLaVA-Pythia + Diffusion-Policy UNet) behind :class:`~vla_gym.policy.Policy`.

Per call: each env's cameras through :mod:`.processing` (the Franka eval's image path), the
``conv_pythia`` prompt, the state normalised with ``qpos_mean/std``; one batched VLM pass
(:class:`~.modeling.LlavaPythia`); the pooled hidden state conditions 10 DDIM steps of the UNet
(:mod:`.diffusion`) from per-env seeded noise; the (B, chunk, action_dim) result in [-1, 1] is
un-normalised with the min-max inverse the head was trained with and turned into env actions by
the configured :mod:`.actions` transform. Chunks are executed by the runner with temporal
ensembling (k = 0.01), as the original eval.

Noise: env ``e`` draws its initial DDIM noise from its own ``torch.Generator`` (CPU), seeded at
``reset(env_ids=[e], seeds=[s])`` with ``s``, or with ``e`` itself when no seed is given (so
unseeded envs still draw independent noise, reproducibly). A batch of B envs is B independent
samples, and row b of a batched call equals the B = 1 call of env b in the same generator state.
``act(..., noise=x)`` takes the initial noise instead: ``x`` of shape (B, chunk_size, action_dim)
in the head's normalised action space (the original's ``torch.randn((B, Tp, action_dim))``); the
generators are then not drawn from. That reproduces a chunk exactly, e.g. against another
implementation fed the same noise.

Precision (``precision``): ``reference`` (default) is the original's arithmetic: fp32 weights as
the loader gives them (see :mod:`.loader`), the step embedding in bf16 as the original hard-codes
it, DDIM samples in the weights' dtype. ``fp32`` computes the step embedding and the DDIM update in
float32 whatever the weights' dtype (the cleaner math; with ``quantization`` bf16/fp16 it keeps
the sampler out of half precision). Their measured difference is in docs/fidelity-tinyvla-oft.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_gym.policies.tinyvla import actions as action_tf
from vla_gym.policies.tinyvla.diffusion import NUM_INFERENCE_STEPS, denoise, make_scheduler
from vla_gym.policies.tinyvla.loader import LoadedTinyVLA, load_tinyvla, load_tokenizer
from vla_gym.policies.tinyvla.processing import (
    conv_pythia_prompt,
    image_to_pixels,
    load_image_processor,
    processor_size,
    tokenizer_image_token,
)
from vla_gym.policies.tinyvla.stats import TinyVLAStats, find_stats
from vla_gym.policies.toolkit.device import select_device
from vla_gym.policies.toolkit.errors import CheckpointError
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

DEFAULT_CAMERAS = ("agentview", "wrist")
PRECISIONS = ("reference", "fp32")
STATE_KEYS = {8: "state", 7: "joint_pos"}


class TinyVLAPolicy(Policy):
    """TinyVLA droid_diffusion policy: a (chunk_size, 7) env-action chunk per call."""

    name = "tinyvla"
    execution = ChunkExecution(mode="temporal_ensemble")
    loads_weights = True
    quantization_skip = ("embed_out",)  # the diffusion head (UNet) stays unquantized
    weight_paths = ("checkpoint", "model_base", "stats")
    reference_scene_seed = None  # TinyVLA published no LIBERO eval

    def __init__(self, loaded: LoadedTinyVLA, tokenizer: Any, processor: Any, stats: TinyVLAStats, *,
                 image_size: int, cameras: Sequence[str], action_transform: str = "auto",
                 center_crop: bool = True, state_key: str | None = None, quantization_name: str = "none",
                 device: torch.device | None = None, precision: str = "reference") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; choose one of {list(PRECISIONS)}")
        cfg = loaded.cfg
        self.model = loaded.model
        self.cfg = cfg
        self.report = loaded.report
        self.tokenizer = tokenizer
        self.processor = processor
        self.stats = stats
        self.device = device or torch.device("cpu")
        self.cameras = tuple(cameras)
        if not self.cameras:
            raise ValueError("TinyVLA needs at least one camera")
        if stats.action.dim != cfg.action_dim:
            raise CheckpointError(f"{stats.source}: action stats are {stats.action.dim}-D but {cfg.source} says "
                                  f"action_dim={cfg.action_dim}; use the stats of the same run")
        if stats.state.dim != cfg.state_dim:
            raise CheckpointError(f"{stats.source}: qpos stats are {stats.state.dim}-D but {cfg.source} says "
                                  f"state_dim={cfg.state_dim}; use the stats of the same run")
        self.state_key = state_key or STATE_KEYS.get(cfg.state_dim)
        if self.state_key is None:
            raise CheckpointError(f"{cfg.source}: state_dim={cfg.state_dim}; the env offers `state` (8-D: eef pos, "
                                  "axis-angle, gripper qpos) and `joint_pos` (7-D); set policy.state_key")
        self.transform = action_tf.resolve_transform(action_transform, cfg.action_dim)
        self.center_crop = bool(center_crop)
        self.quantization_name = quantization_name
        self.precision = precision
        # the step embedding's dtype: the original's hard-coded bf16, or fp32 for precision=fp32
        self.model.embed_out.diffusion_step_encoder[0].dtype = (torch.bfloat16 if precision == "reference"
                                                                else torch.float32)
        self.scheduler = make_scheduler()
        self.inputs = PolicyInputs(cameras=self.cameras, image_size=int(image_size), uses_state=True)
        self._generators: dict[int, torch.Generator] = {}

    @classmethod
    def from_pretrained(cls, checkpoint: str | Path, *, model_base: str | Path | None = None,
                        stats: str | Path | None = None, allow_stats_pickle: bool = False,
                        image_size: int | None = None, cameras: Sequence[str] = DEFAULT_CAMERAS,
                        action_transform: str = "auto", center_crop: bool = True, state_key: str | None = None,
                        device: str = "auto", quantization: Mapping[str, Any] | str | None = None,
                        precision: str = "reference") -> TinyVLAPolicy:
        """Load a TinyVLA checkpoint (see :mod:`.loader`) and build the policy.

        Args:
            checkpoint: The LoRA checkpoint dir (``adapter_config.json``, ``non_lora_trainables.bin``,
                ``preprocessor_config.json``; ``config.json`` here or in its parent) or a merged dir.
            model_base: Base VLM dir; required for a LoRA checkpoint (tokenizer and base weights).
            stats: Stats file; None = ``dataset_stats.json``/``.safetensors`` in the checkpoint dir or
                its parent (``dataset_stats.pkl`` only with ``allow_stats_pickle``).
            allow_stats_pickle: Read ``dataset_stats.pkl`` through the restricted unpickler.
            image_size: Env render size; None = the CLIP processor's size (336 for the released bases).
            cameras: Env cameras in the checkpoint's order (cam0, cam1 of training).
            action_transform: See :mod:`.actions` (``auto``, ``identity``, ``delta_rot6d``).
            center_crop: The eval's 95 % centre crop + resize back (on for the diffusion head).
            state_key: Observation key fed as robot state; None = ``state`` for 8-D, ``joint_pos`` for 7-D.
            device: ``auto``/``cpu``/``cuda``.
            quantization: Hydra quantization node (the UNet is kept unquantized).
            precision: ``reference`` (the original's arithmetic: bf16 step embedding, DDIM in the
                weights' dtype) or ``fp32`` (step embedding and DDIM in float32); see the module doc.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}; choose one of {list(PRECISIONS)}")
        from vla_gym.quantization import apply_quantization

        loaded = load_tinyvla(checkpoint, model_base)
        processor, _ = load_image_processor(loaded.processor_dirs)
        tokenizer = load_tokenizer(loaded.tokenizer_dir)
        found = find_stats(loaded.stats_dirs, Path(stats).expanduser() if stats else None, allow_stats_pickle)
        dev = select_device(device)
        qname = apply_quantization(loaded.model, quantization, dev, skip_modules=cls.quantization_skip)
        return cls(loaded, tokenizer, processor, found, image_size=image_size or processor_size(processor),
                   cameras=tuple(cameras), action_transform=action_transform, center_crop=center_crop,
                   state_key=state_key, quantization_name=qname, device=dev, precision=precision)

    # -- episode state -------------------------------------------------------------------------
    def reset(self, env_ids: Sequence[int] | None = None, seeds: Sequence[int | None] | None = None) -> None:
        """Reseed the noise generator of each env (seed None = the env id); all envs forgotten when None."""
        targets = reset_targets(env_ids, seeds)
        if not targets:
            self._generators.clear()
        for env_id, seed in targets:
            self._generators[env_id] = torch.Generator().manual_seed(int(env_id if seed is None else seed))

    def _generator(self, env_id: int) -> torch.Generator:
        if env_id not in self._generators:
            self._generators[env_id] = torch.Generator().manual_seed(int(env_id))
        return self._generators[env_id]

    # -- one call ------------------------------------------------------------------------------
    def preprocess(self, observations: Sequence[Observation]) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Token ids per row, pixels (B, n_cams, 3, S, S), normalised states (B, state_dim), on the device."""
        ids, pixels, states = [], [], []
        for obs in observations:
            missing = [c for c in self.cameras if c not in obs["images"]]
            if missing:
                raise KeyError(f"observation lacks cameras {missing}; TinyVLA reads {list(self.cameras)}")
            pixels.append(torch.stack([image_to_pixels(np.asarray(obs["images"][c]), self.processor,
                                                       self.center_crop) for c in self.cameras]))
            ids.append(torch.tensor(tokenizer_image_token(conv_pythia_prompt(str(obs["instruction"])), self.tokenizer),
                                    dtype=torch.long, device=self.device))
            state = np.asarray(obs[self.state_key], dtype=np.float64)
            states.append(self.stats.state.normalize(state))
        px = torch.stack(pixels).to(self.device)
        st = torch.tensor(np.stack(states), dtype=torch.float32, device=self.device)
        return ids, px, st

    @torch.no_grad()
    def forward(self, ids: list[torch.Tensor], pixels: torch.Tensor, states: torch.Tensor,
                noise: torch.Tensor, timer: StageTimer) -> torch.Tensor:
        """Normalised action chunks (B, chunk, action_dim) float32, timing vision / llm / diffusion into ``timer``."""
        model = self.model
        dtype = model.dtype
        with timer("vision"):
            feats = model.encode_images(pixels.to(dtype))
            self._sync()
        with timer("llm"):
            embeds, mask = model.splice(ids, feats)
            pooled = model.pooled_hidden(embeds, mask)
            self._sync()
        with timer("diffusion"):
            head = model.embed_out
            cond = head.condition(pooled, states.to(dtype))
            sample_dtype = dtype if self.precision == "reference" else torch.float32
            out = denoise(lambda x, t: head(x.to(dtype), t, cond), noise, self.scheduler, NUM_INFERENCE_STEPS,
                          sample_dtype=sample_dtype)
            self._sync()
        return out

    def _sync(self) -> None:
        """Wait for queued CUDA kernels, so each stage's time is its own (no-op on CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def initial_noise(self, noise: Any, batch: int) -> torch.Tensor:
        """A user's initial DDIM noise checked: (B, chunk_size, action_dim), finite, as float32."""
        shape = (batch, self.cfg.chunk_size, self.cfg.action_dim)
        if isinstance(noise, torch.Tensor):
            if not noise.is_floating_point():
                raise ValueError("noise must be a finite floating-point array")
            noise = noise.detach().float().cpu().numpy()  # numpy has no bf16
        arr = np.asarray(noise)
        if arr.shape != shape:
            raise ValueError(f"noise has shape {arr.shape}; TinyVLA needs (B, chunk_size, action_dim) = {shape}")
        if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
            raise ValueError("noise must be a finite floating-point array")
        return torch.from_numpy(arr.astype(np.float32, copy=True))

    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None, *,
            noise: Any = None) -> ActionChunk:
        """(B, chunk_size, 7) env actions; ``info``: ``timing_ms`` (preprocess/model/postprocess and, inside
        model, vision/llm/diffusion) and ``num_denoise_steps``.

        ``noise``: optional initial DDIM noise (B, chunk_size, action_dim) in the normalised action
        space (numpy or torch); None = each env's generator draws it (see the module docstring).
        """
        ids_env = resolve_env_ids(observations, env_ids)
        timer = StageTimer()
        with timer("preprocess"):
            ids, pixels, states = self.preprocess(observations)
            if noise is not None:
                noise = self.initial_noise(noise, len(observations)).to(self.device)
            else:
                shape = (self.cfg.chunk_size, self.cfg.action_dim)
                noise = torch.stack([torch.randn(shape, generator=self._generator(e))
                                     for e in ids_env]).to(self.device)
        t_model = StageTimer()
        with timer("model"):
            normed = self.forward(ids, pixels, states, noise, t_model)
            normed = normed.cpu().numpy()
        with timer("postprocess"):
            raw = self.stats.action.unnormalize(normed)
            actions = action_tf.to_env_actions(raw, self.transform)
        ms = {**timer.ms, **t_model.ms}
        return ActionChunk(actions, {"timing_ms": ms, "num_denoise_steps": NUM_INFERENCE_STEPS})

    @property
    def chunk_size(self) -> int:
        """Actions per chunk, from the checkpoint's config."""
        return self.cfg.chunk_size

    def info(self) -> PolicyInfo:
        """Name, chunk size, action dim and weight bytes of the loaded checkpoint."""
        from vla_gym.quantization import describe_weights

        nbytes, dtype = describe_weights(self.model)
        return PolicyInfo(name=self.name, action_dim=7, chunk_size=self.chunk_size, weight_bytes=nbytes, dtype=dtype,
                          quantization=self.quantization_name, device=str(self.device),
                          extra={"layout": self.report.layout, "action_transform": self.transform,
                                 "lora_layers": self.report.lora_layers, "stats": str(self.stats.source),
                                 "num_denoise_steps": NUM_INFERENCE_STEPS, "cameras": list(self.cameras),
                                 "precision": self.precision})

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self.model = None  # type: ignore[assignment]
