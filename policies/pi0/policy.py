"""``Pi0Policy``: pi0 / pi0.5 LIBERO policies behind :class:`~vla_gym.policy.Policy`.

One call = one flow-matching sample per observation: reference images, normalised state,
prompt tokens and per-env noise go through :meth:`Pi0Model.sample_actions` as one batch; the
chunk is un-normalised (and made absolute for ``pi0_libero``) and cut to the 7 LIBERO dims.
Images follow each layout's reference (:mod:`vla_gym.policies.pi0.images`): openpi dirs openpi's
client (render 256, PIL resize-with-pad), LeRobot dirs ``lerobot-eval`` (render 360, torch
resize-with-pad in float, no antialias); ``docs/fidelity-pi0.md`` puts the two side by side.

Noise: ``act(noise=)`` takes the flow's x_1 explicitly (as both references' samplers do); otherwise
each env has its own ``torch.Generator``, seeded by :meth:`reset` with the episode seed
(``seed + env_id`` before any reset), so an episode is reproducible and does not depend on which
envs share the batch; a batch is B independent samples and row b equals the B = 1 call within
float tolerance (measured in tests/policies/test_pi0_policy.py).

Precision (``precision``): null = the reference's: openpi casts ``paligemma_with_expert`` of every
checkpoint to bf16 with patch/position embeddings and all Gemma norms (incl. AdaRMS ``dense``) kept
in fp32 (``to_bfloat16_for_selected_params``; the action/time/state projections stay fp32); LeRobot
runs its config's ``dtype`` (bf16 keeps the vision tower and projector in fp32 as well). Each
layout's flow-time schedule and rounding of the kept parameters are its reference's
(``Pi0Model.sample_actions(time_schedule=...)``, ``set_precision(round_kept=...)``). ``fp32`` runs everything in fp32 (use it on CPUs without bf16 kernels: a bf16 batched matmul of
the attention's shape measured 29 ms against 0.3 ms in fp32 on this project's 2-core CI CPU). ``quantization``
(none | fp32 | fp16 | bf16 | int8 | int4) is applied afterwards; int8/int4 keep
:attr:`Pi0Policy.quantization_skip` unquantized.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_gym.policies.pi0.config import Pi0Checkpoint, read_checkpoint
from vla_gym.policies.pi0.loader import build_model
from vla_gym.policies.pi0.modeling import LEROBOT_FP32_KEEP, OPENPI_FP32_KEEP, Pi0Model
from vla_gym.policies.pi0.images import MODEL_IMAGE_SIZE, RENDER_SIZE, check_pipeline, image_batch
from vla_gym.policies.pi0.processing import DELTA_DIMS, pad_state, raw_states, slot_cameras, to_env_actions
from vla_gym.policies.pi0.rtc import RTCGuide, RTCRequest
from vla_gym.policies.pi0.prompts import PromptFormat, check_prompt_format
from vla_gym.policies.pi0.stats import Pi0Norm, find_openpi_stats, load_lerobot_stats, load_openpi_stats
from vla_gym.policies.pi0.tokenizer import PaligemmaTokenizer, find_tokenizer
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

REFERENCE_RENDER_SIZE = RENDER_SIZE["openpi"]  # openpi examples/libero/main.py LIBERO_ENV_RESOLUTION
OPENPI_REPLAN_STEPS = 5  # openpi LIBERO client replan_steps
PRECISIONS = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


def load_norm(ckpt: Pi0Checkpoint, asset_id: str | None) -> Pi0Norm:
    """The checkpoint's state/action statistics, of the kinds its recipe declares."""
    family = f"{ckpt.variant} ({ckpt.provenance})"
    if ckpt.layout == "openpi":
        if ckpt.state_kind is not ckpt.action_kind:
            raise AssertionError("openpi recipes use one kind for state and actions")
        file = find_openpi_stats(ckpt.path, asset_id or str(ckpt.asset_id))
        return load_openpi_stats(file, ckpt.state_kind, family)
    if asset_id is not None:
        raise CheckpointError(f"{ckpt.path} is a LeRobot checkpoint (stats in its normaliser files); "
                              "asset_id applies to openpi dirs only, set it to null")
    return load_lerobot_stats(ckpt.path, ckpt.state_kind, ckpt.action_kind, family)


class Pi0Policy(Policy):
    """pi0 / pi0.5 LIBERO policy: an (H, 7) chunk per call from agentview + wrist (+ 8-D state)."""

    inputs = PolicyInputs(cameras=("agentview", "wrist"), image_size=REFERENCE_RENDER_SIZE, uses_state=True)
    execution = ChunkExecution("open_loop", replan_steps=OPENPI_REPLAN_STEPS)
    reference_scene_seed = 7  # openpi examples/libero/main.py: env.seed(7)
    loads_weights = True
    # act(rtc=...) takes real-time-chunking guidance (vla_gym.policies.pi0.rtc, docs/rtc.md); an executor
    # asks getattr(policy, "supports_rtc", False) before handoff=rtc.
    supports_rtc = True
    weight_paths = ("checkpoint", "tokenizer")
    # Kept unquantized by int8/int4: the small action/time/state projections around the expert (all
    # continuous-valued regression paths) and the AdaRMS `dense` of every expert norm (matched by the
    # norm's name), which openpi keeps in fp32. lm_head is tied to the embedding and not an
    # nn.Linear; SigLIP's patch/position embeddings are Conv2d/Embedding: neither is quantized.
    quantization_skip = ("action_in_proj", "action_out_proj", "state_proj", "action_time_mlp_in",
                         "action_time_mlp_out", "time_mlp_in", "time_mlp_out", "input_layernorm",
                         "post_attention_layernorm", "norm")

    def __init__(self, model: Pi0Model, ckpt: Pi0Checkpoint, norm: Pi0Norm, tokenizer: PaligemmaTokenizer,
                 prompt_format: PromptFormat, *, num_steps: int, precision: str, quantization_name: str = "none",
                 device: torch.device | None = None, image_size: int | None = None,
                 image_pipeline: str | None = None, seed: int = 0) -> None:
        if model.dims.action_horizon != ckpt.action_horizon or model.dims.pi05 != ckpt.pi05:
            raise ValueError("model and checkpoint description disagree on horizon or variant")
        if tokenizer.vocab_size > model.dims.vocab_size:
            raise CheckpointError(f"tokenizer {tokenizer.file} has {tokenizer.vocab_size} pieces but the model embeds "
                                  f"only {model.dims.vocab_size}: it is not this model's tokenizer")
        if model.dims.vision.image_size != MODEL_IMAGE_SIZE:
            raise CheckpointError(f"{ckpt.weights}: SigLIP takes {model.dims.vision.image_size} px images; the LIBERO "
                                  f"path (resize-with-pad) is fixed to {MODEL_IMAGE_SIZE} as in both references")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.model = model
        self.ckpt = ckpt
        self.norm = norm
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.num_steps = int(num_steps)
        self.precision = precision
        self.quantization_name = quantization_name
        self.device = device or torch.device("cpu")
        self.seed = int(seed)
        self.name = ckpt.variant
        self.image_pipeline = check_pipeline(image_pipeline or ckpt.layout)
        self.slot_cameras = slot_cameras(ckpt.image_slots, str(ckpt.path / "config.json"))
        uses_state = not ckpt.pi05 or prompt_format.uses_state or ckpt.delta_actions
        self.inputs = PolicyInputs(cameras=tuple(c for c in self.slot_cameras if c is not None),
                                   image_size=RENDER_SIZE[ckpt.layout] if image_size is None else int(image_size),
                                   uses_state=uses_state)
        if ckpt.n_action_steps is not None:  # LeRobot's eval executes n_action_steps of each chunk
            self.execution = ChunkExecution("open_loop", replan_steps=min(ckpt.n_action_steps, ckpt.action_horizon))
        self._generators: dict[int, torch.Generator] = {}

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        *,
        variant: str | None = None,
        tokenizer: str | Path | None = None,
        openpi_config: str | None = None,
        asset_id: str | None = None,
        prompt_format: str | None = None,
        precision: str | None = None,
        num_steps: int | None = None,
        device: str = "auto",
        image_size: int | None = None,
        image_pipeline: str | None = None,
        seed: int = 0,
        quantization: Mapping[str, Any] | str | None = None,
    ) -> Pi0Policy:
        """Load an openpi-PyTorch or LeRobot pi0/pi0.5 checkpoint dir (see :mod:`vla_gym.policies.pi0.config`).

        Args:
            checkpoint: The dir with ``model.safetensors`` (LeRobot: ``pretrained_model/`` or its parent).
            variant: ``pi0`` / ``pi05`` to assert (the weights decide; a mismatch is an error), or None.
            tokenizer: PaliGemma SentencePiece model file (or a dir holding it); None = look in the
                checkpoint dir, then (LeRobot dirs) the local HF cache of the repo the preprocessor
                names, then openpi's download cache.
            openpi_config: openpi recipe (``pi0_libero`` / ``pi05_libero``); None = the LIBERO recipe
                of the detected variant. Decides prompt, token length and the delta-action transform.
            asset_id: openpi stats under ``assets/<asset_id>``; None = the recipe's
                (``physical-intelligence/libero``).
            prompt_format: Assert the prompt format (must equal the checkpoint's), or None.
            precision: ``bf16`` / ``fp32``; None = the reference's (openpi bf16 with fp32-kept
                parameters; LeRobot its config ``dtype``).
            num_steps: Euler steps; None = the checkpoint's (10).
            device: ``auto`` / ``cpu`` / ``cuda[:N]``.
            image_size: Env render size; None = the layout's reference: 256 (openpi's LIBERO client) for
                openpi dirs, 360 (``lerobot-eval``'s ``LiberoEnv``) for LeRobot dirs.
            image_pipeline: ``openpi`` (flip, PIL resize-with-pad on uint8) or ``lerobot`` (flip, torch
                bilinear resize-with-pad on float, no antialias); None = the layout's own reference
                (see :mod:`vla_gym.policies.pi0.images`).
            seed: Noise seed of env ``i`` before its first reset is ``seed + i``.
            quantization: The Hydra quantization node (passed by the runner).
        """
        from vla_gym.quantization import apply_quantization

        if image_pipeline is not None:
            check_pipeline(image_pipeline)
        ckpt = read_checkpoint(checkpoint, variant=variant, openpi_config=openpi_config)
        fmt = check_prompt_format(prompt_format, ckpt.prompt_format, f"{ckpt.path} ({ckpt.provenance})")
        norm = load_norm(ckpt, asset_id)
        tok = PaligemmaTokenizer(find_tokenizer(tokenizer, ckpt.path, ckpt.tokenizer_repo), ckpt.max_token_len)
        name = precision or ("bf16" if ckpt.reference_precision == "bfloat16" else "fp32")
        if name not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)} or null, got {precision!r}")
        dev = select_device(device)
        model = build_model(ckpt)
        keep = LEROBOT_FP32_KEEP if ckpt.layout == "lerobot" else OPENPI_FP32_KEEP
        model.set_precision(PRECISIONS[name], keep_fp32=keep, round_kept=ckpt.layout == "openpi")
        # The reference's fp32-kept parameters (norms, embeddings; the projections outside
        # paligemma_with_expert) keep their dtype through quantization's casts too.
        outer = tuple(f"{n}." for n, _ in model.named_children() if n != "paligemma_with_expert")
        qname = apply_quantization(model, quantization, dev, skip_modules=cls.quantization_skip,
                                   keep_dtype=(*keep, *outer))
        return cls(model, ckpt, norm, tok, fmt, num_steps=num_steps or ckpt.num_steps,
                   precision="bf16" if PRECISIONS[name] == torch.bfloat16 else "fp32", quantization_name=qname,
                   device=dev, image_size=image_size, image_pipeline=image_pipeline, seed=seed)

    # -- noise -------------------------------------------------------------------------------------
    def reset(self, env_ids: Sequence[int] | None = None, seeds: Sequence[int | None] | None = None) -> None:
        """Reseed the noise of ``env_ids`` with their episode seeds (None: ``seed + env_id``); all when None."""
        if env_ids is None:
            self._generators.clear()
        for env_id, seed in reset_targets(env_ids, seeds):
            self._generators[env_id] = self._generator(self.seed + env_id if seed is None else int(seed))

    @staticmethod
    def _generator(seed: int) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(seed)

    @property
    def noise_shape(self) -> tuple[int, int]:
        """``(action_horizon, max_action_dim)`` of one row of ``act(noise=)``: the model's action space."""
        return self.chunk_size, self.model.dims.action_dim

    def noise(self, env_ids: Sequence[int]) -> torch.Tensor:
        """(B, H, 32) float32 standard normal noise, row b from env ``env_ids[b]``'s generator."""
        shape = self.noise_shape
        rows = []
        for env_id in env_ids:
            gen = self._generators.setdefault(env_id, self._generator(self.seed + env_id))
            rows.append(torch.randn(shape, generator=gen, dtype=torch.float32))
        return torch.stack(rows)

    # -- stages ------------------------------------------------------------------------------------
    def check_noise(self, noise: torch.Tensor | np.ndarray, batch: int) -> torch.Tensor:
        """``act(noise=)`` as a float32 CPU tensor, or a clear error (shape, dtype, finiteness)."""
        if isinstance(noise, np.ndarray):
            noise = torch.from_numpy(noise)
        if not isinstance(noise, torch.Tensor):
            raise TypeError(f"noise must be a torch.Tensor or numpy array, got {type(noise).__name__}")
        expected = (batch, *self.noise_shape)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise must have shape (B, action_horizon, max_action_dim) = {expected}, "
                             f"got {tuple(noise.shape)}")
        if noise.dtype != torch.float32:
            raise TypeError(f"noise must be float32 (the references sample it in float32), got {noise.dtype}")
        if not bool(torch.isfinite(noise).all()):
            raise ValueError("noise must be finite")
        return noise.detach().cpu()

    def preprocess(self, observations: Sequence[Observation], env_ids: Sequence[int],
                   noise: torch.Tensor | np.ndarray | None = None) -> dict[str, Any]:
        """Model inputs on the device, plus the raw states the postprocessing needs."""
        if self.inputs.uses_state:
            raw = raw_states(observations)
        else:  # pi05_libero reads no state (nor does a client have to send it): zeros stand in
            raw = np.zeros((len(observations), self.norm.state.dim))
        state = self.norm.state.normalize(raw)
        dev = self.device
        images, masks = image_batch(observations, self.slot_cameras, self.image_pipeline, dev)
        tokens, token_masks = zip(*[
            self.tokenizer.tokenize(self.prompt_format, str(o["instruction"]), state[i] if self.prompt_format.uses_state
                                    else None)
            for i, o in enumerate(observations)
        ])
        noise = self.noise(env_ids) if noise is None else self.check_noise(noise, len(observations))
        return {
            "images": images,
            "image_masks": masks,
            "tokens": torch.from_numpy(np.stack(tokens)).to(dev),
            "token_masks": torch.from_numpy(np.stack(token_masks)).to(dev),
            "state": torch.from_numpy(pad_state(state, self.model.dims.action_dim)).to(dev),
            "noise": noise.to(dev),
            "raw_state": raw,
        }

    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None, *,
            noise: torch.Tensor | np.ndarray | None = None,
            rtc: RTCRequest | Sequence[RTCRequest | None] | None = None) -> ActionChunk:
        """(B, H, 7) float32 chunks; ``info``: ``timing_ms`` (preprocess, model, postprocess, and
        inside the model vision, prefix, denoise), ``num_denoise_steps`` and ``model_actions`` (B, H, 32)
        float32, the normalised model output before un-normalisation (for ``RTCRequest(space="model")``).

        ``noise``: None = each env's seeded generator (see :meth:`reset`). Otherwise the flow's
        starting point x_1, float32 ``(B, action_horizon, max_action_dim)`` (:attr:`noise_shape`; 32
        wide, in the model's normalised action space), exactly what openpi's
        ``sample_actions(noise=)`` and LeRobot's ``predict_action_chunk(noise=)`` take, so a chunk can
        be reproduced and compared with either; the env generators are then not advanced.

        ``rtc``: real-time chunking (:mod:`vla_gym.policies.pi0.rtc`, docs/rtc.md): one
        :class:`RTCRequest` per row (None for a row without a previous chunk), or one request for a
        batch of 1. Rows are guided independently (own delay, left-over, schedule, mode).
        """
        ids = resolve_env_ids(observations, env_ids)
        requests = self.rtc_requests(rtc, len(observations))
        timer, inner = StageTimer(), StageTimer()
        with timer("preprocess"):
            inputs = self.preprocess(observations, ids, noise)
            raw = inputs.pop("raw_state")
            guide = None if requests is None else self.rtc_guide(requests, raw)
        with timer("model"):
            out = self.model.sample_actions(**inputs, num_steps=self.num_steps, timer=inner,
                                            time_schedule=self.ckpt.layout, rtc=guide)
            out = out.float().cpu().numpy()
        with timer("postprocess"):
            actions = to_env_actions(out, self.norm.actions, raw, delta_actions=self.ckpt.delta_actions,
                                     output_dim=self.ckpt.output_dim)
        return ActionChunk(actions, info={"timing_ms": {**timer.ms, **inner.ms}, "num_denoise_steps": self.num_steps,
                                          "model_actions": out})

    # -- real-time chunking ------------------------------------------------------------------------
    @staticmethod
    def rtc_requests(rtc: RTCRequest | Sequence[RTCRequest | None] | None, batch: int) -> list[RTCRequest | None] | None:
        """One request (or None) per row; None when no row is guided."""
        if rtc is None:
            return None
        if isinstance(rtc, RTCRequest):
            if batch != 1:
                raise ValueError(f"rtc: one RTCRequest is for a batch of 1; pass a list of {batch} (None for rows "
                                 "without a previous chunk)")
            rows: list[RTCRequest | None] = [rtc]
        else:
            rows = list(rtc)
            if len(rows) != batch:
                raise ValueError(f"rtc: got {len(rows)} requests for {batch} observations")
            for row in rows:
                if row is not None and not isinstance(row, RTCRequest):
                    raise TypeError(f"rtc rows must be RTCRequest or None, got {type(row).__name__}")
        return None if all(r is None for r in rows) else rows

    def rtc_model_actions(self, request: RTCRequest, raw_state: np.ndarray) -> np.ndarray:
        """The request's left-over in the model's normalised space (T_prev, D <= max_action_dim).

        ``env`` space inverts :func:`to_env_actions`: for delta checkpoints the absolute actions are
        re-anchored to the new observation's state (LeRobot's ``reanchor_relative_rtc_prefix``), then
        normalised; dims the env does not see (between the env width and the statistics') stay 0."""
        y = request.prev_actions
        horizon, width = self.noise_shape
        if len(y) > horizon:
            raise ValueError(f"rtc.prev_actions has {len(y)} rows, more than the chunk's {horizon}")
        if request.space == "model":
            if y.shape[1] > width:
                raise ValueError(f"rtc.prev_actions (space=model) has {y.shape[1]} dims, more than the model's {width}")
            return y
        if y.shape[1] != self.ckpt.output_dim:
            raise ValueError(f"rtc.prev_actions (space=env) must have the env action width {self.ckpt.output_dim}, "
                             f"got {y.shape[1]}")
        y = y.copy()
        if self.ckpt.delta_actions:
            y[:, :DELTA_DIMS] -= raw_state[None, :DELTA_DIMS]
        return self.norm.actions.normalize(y)

    def rtc_guide(self, requests: Sequence[RTCRequest | None], raw: np.ndarray) -> RTCGuide:
        """The batch's guidance tensors on the model's device."""
        targets = [None if r is None else self.rtc_model_actions(r, raw[i]) for i, r in enumerate(requests)]
        horizon, width = self.noise_shape
        return RTCGuide.build(requests, targets, horizon, width, self.device)

    @property
    def chunk_size(self) -> int:
        """Actions per call: the checkpoint's horizon (pi0_libero 50, pi05_libero 10)."""
        return self.ckpt.action_horizon

    def info(self) -> PolicyInfo:
        """Name, chunk size, layout, variant, recipe and weight bytes of the loaded checkpoint."""
        from vla_gym.quantization import describe_weights

        nbytes, dtype = describe_weights(self.model)
        d = self.model.dims
        return PolicyInfo(
            name=self.name, action_dim=self.ckpt.output_dim, chunk_size=self.chunk_size, weight_bytes=nbytes,
            dtype=dtype, quantization=self.quantization_name, device=str(self.device),
            extra={"layout": self.ckpt.layout, "provenance": self.ckpt.provenance,
                   "prompt_format": self.prompt_format.name, "image_pipeline": self.image_pipeline,
                   "max_token_len": self.tokenizer.max_len,
                   "state_norm": self.norm.state.stats.kind.value, "action_norm": self.norm.actions.stats.kind.value,
                   "norm_rule": self.ckpt.norm_rule, "delta_actions": self.ckpt.delta_actions,
                   "precision": self.precision, "num_denoise_steps": self.num_steps,
                   "widths": {"vision": d.vision.width, "paligemma": d.paligemma.width, "expert": d.expert.width}},
        )

    def close(self) -> None:
        """Drop the model (frees its memory once no one else holds it)."""
        self.model = None  # type: ignore[assignment]
