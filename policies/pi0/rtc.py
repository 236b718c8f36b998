"""Real-time chunking (RTC) for pi0 / pi0.5: inference-time inpainting guidance of the Euler sampler.

While a chunk is being computed the robot keeps executing the previous one, so the new chunk's first
``d`` actions (the inference delay) are already committed, and the rest of the overlap should join
them smoothly. RTC (Black, Galliker, Levine 2025, arXiv 2506.07339; Physical Intelligence's Kinetix
code ``FlowPolicy.realtime_action``) guides every denoising step towards the previous chunk's
left-over actions ``Y`` under a soft mask ``W``:

    x1_hat = x_t - t * v(x_t)                      (one-step clean estimate; t: 1 = noise -> 0 = data)
    g      = W * (Y - x1_hat)
    c      = min(beta, (1 - tau) / tau * ((1 - tau)^2 + tau^2) / (1 - tau)^2),   tau = 1 - t
    v_rtc  = v - c * J^T g,   J = d x1_hat / d x_t

(the paper writes it in tau = 1 - t, where v_PI = -v and the sign of the correction flips; LeRobot
writes it as here). Two guidance modes:

- ``original`` (default): J^T g is the vector-Jacobian product through the network (torch.autograd), as
  Kinetix's ``jax.vjp`` does; one backward pass of the action expert per Euler step.
- ``lerobot``: as LeRobot 0.6.1's ``RTCProcessor.denoise_step``: v is computed before x_t requires
  grad, so J = I and the correction is g itself (confirmed by its maintainers, huggingface/lerobot#2511).

Weights W (``prefix_weights``) are LeRobot's / Kinetix's ``get_prefix_weights``: ``start = d``,
``end = execution_horizon``, schedules ZEROS / ONES / LINEAR / EXP. As LeRobot, ``execution_horizon``
is clamped to the left-over length and the left-over is zero-padded to the chunk (H, max_action_dim),
so padded positions and dims with weight > 0 are pulled towards 0.

This module holds the request (:class:`RTCRequest`, validated: it comes from the caller) and the
maths (:class:`RTCGuide`); :meth:`Pi0Model.sample_actions` calls :meth:`RTCGuide.velocity` at each step
and :class:`~vla_gym.policies.pi0.policy.Pi0Policy` turns requests into a guide. docs/rtc.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from torch import Tensor

GUIDANCE_MODES = ("original", "lerobot")
SPACES = ("env", "model")
MAX_GUIDANCE_WEIGHT_LIMIT = 1e6  # a bound on untrusted input, far above any useful value (the paper uses 5)


class Schedule(str, Enum):
    """Prefix-attention schedule (LeRobot ``RTCAttentionSchedule``, Kinetix ``prefix_attention_schedule``)."""

    ZEROS = "zeros"  # hard mask: 1 on the frozen prefix [0, d), 0 after
    ONES = "ones"  # 1 on [0, execution_horizon)
    LINEAR = "linear"  # 1 on [0, d), linear decay to 0 over [d, execution_horizon)
    EXP = "exp"  # 1 on [0, d), c * (e^c - 1) / (e - 1) of the linear c over [d, execution_horizon) (the paper's)


@dataclass(frozen=True)
class RTCRequest:
    """What the executor passes per row of ``Pi0Policy.act(rtc=...)``.

    Attributes:
        prev_actions: (T_prev, D) the previous chunk's actions not yet executed when the new
            observation was taken: row 0 is the action executed at the step of that observation
            (the new chunk's index 0), rows 0..d-1 are those that will run while the model thinks.
            ``T_prev <= H``; fewer rows are zero-padded (LeRobot's rule).
        inference_delay: d, actions of the new chunk that are stale on arrival (frozen prefix).
        execution_horizon: End of the guided region; None = ``T_prev`` (the paper's ``H - s``: all of
            the overlap); LeRobot's default is 10. Clamped to ``T_prev`` as LeRobot does.
        schedule: One of :class:`Schedule` (name or value, any case).
        max_guidance_weight: beta, the clip of the guidance weight (LeRobot 10 for 10 steps; paper 5 for 5).
        guidance: ``original`` (VJP through the network) or ``lerobot`` (identity Jacobian).
        space: ``env``: D = the env action width (7), the policy's own returned actions; they are
            re-anchored to the new observation's state for delta checkpoints (``pi0_libero``),
            normalised, zero-padded. ``model``: D <= max_action_dim (32), normalised model actions, e.g.
            a slice of the previous call's ``info["model_actions"]``: exact, what LeRobot takes.
    """

    prev_actions: np.ndarray
    inference_delay: int
    execution_horizon: int | None = None
    schedule: Schedule | str = Schedule.EXP
    max_guidance_weight: float = 10.0
    guidance: str = "original"
    space: str = "env"

    def __post_init__(self) -> None:
        prev = np.asarray(self.prev_actions)
        if prev.ndim != 2 or prev.shape[0] < 1 or prev.shape[1] < 1:
            raise ValueError(f"rtc.prev_actions must be a non-empty (T_prev, action_dim) array, got shape {prev.shape}")
        if not np.issubdtype(prev.dtype, np.floating) or not np.all(np.isfinite(prev)):
            raise ValueError("rtc.prev_actions must be finite floats")
        object.__setattr__(self, "prev_actions", prev.astype(np.float64))
        object.__setattr__(self, "inference_delay", _count(self.inference_delay, "inference_delay"))
        if self.execution_horizon is not None:
            object.__setattr__(self, "execution_horizon", _count(self.execution_horizon, "execution_horizon"))
        object.__setattr__(self, "schedule", parse_schedule(self.schedule))
        beta = float(self.max_guidance_weight)
        if not 0 < beta <= MAX_GUIDANCE_WEIGHT_LIMIT:
            raise ValueError(f"rtc.max_guidance_weight must be in (0, {MAX_GUIDANCE_WEIGHT_LIMIT:g}], got {beta}")
        object.__setattr__(self, "max_guidance_weight", beta)
        if self.guidance not in GUIDANCE_MODES:
            raise ValueError(f"rtc.guidance must be one of {GUIDANCE_MODES}, got {self.guidance!r}")
        if self.space not in SPACES:
            raise ValueError(f"rtc.space must be one of {SPACES}, got {self.space!r}")

    def horizon(self) -> int:
        """The guided region's end after LeRobot's clamp to the left-over length."""
        end = len(self.prev_actions) if self.execution_horizon is None else self.execution_horizon
        return min(end, len(self.prev_actions))


def _count(value: object, name: str) -> int:
    """An integer >= 0 (numpy integers too), or one clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"rtc.{name} must be an integer >= 0, got {value!r}")
    return int(value)


def parse_schedule(value: Schedule | str) -> Schedule:
    """A :class:`Schedule` from its name or value, or one clear error."""
    if isinstance(value, Schedule):
        return value
    try:
        return Schedule(str(value).lower())
    except ValueError:
        raise ValueError(f"rtc.schedule must be one of {[s.value for s in Schedule]}, got {value!r}") from None


def prefix_weights(start: int, end: int, total: int, schedule: Schedule | str) -> Tensor:
    """(total,) float32 soft mask, numerically LeRobot's ``RTCProcessor.get_prefix_weights``.

    ``start`` (= d) is clamped to ``end``; 1 before ``start``, the schedule's decay on [start, end),
    0 from ``end`` (ONES: 1 on [0, end); ZEROS: 1 on [0, start)).
    """
    schedule = parse_schedule(schedule)
    start = min(start, end)
    index = torch.arange(total)
    if schedule is Schedule.ZEROS:
        return (index < start).to(torch.float32)
    if schedule is Schedule.ONES:
        return (index < end).to(torch.float32)
    weights = (index < start).to(torch.float32)
    span = min(end, total) - start
    if span > 0:  # LeRobot: linspace(1, 0, span + 2)[1:-1]
        ramp = torch.linspace(1, 0, span + 2)[1:-1]
        if schedule is Schedule.EXP:
            ramp = ramp * torch.expm1(ramp).div(math.e - 1)
        weights[start : start + span] = ramp
    return weights


def guidance_weight(time: float, beta: float) -> float:
    """min(beta, c / r^2) at flow time ``time`` (1 = noise); beta where the formula is infinite (tau = 0)."""
    tau = 1.0 - time
    if tau <= 0.0:
        return beta
    if tau >= 1.0:  # 1 - tau = 0: inv_r2 = inf, c = 0 (not reached by the samplers: t > 0)
        return beta
    inv_r2 = ((1 - tau) ** 2 + tau**2) / (1 - tau) ** 2
    value = (1 - tau) / tau * inv_r2
    return beta if not math.isfinite(value) else min(value, beta)


@dataclass
class RTCGuide:
    """The batch's guidance tensors; :meth:`velocity` wraps one Euler step's velocity.

    ``target`` (B, H, A) zero-padded left-overs in model space; ``weights`` (B, H, 1) (all zero for a
    row without a request, which leaves that row's velocity unchanged exactly); ``beta`` and
    ``use_vjp`` per row.
    """

    target: Tensor
    weights: Tensor
    beta: Sequence[float]
    use_vjp: Sequence[bool]

    @classmethod
    def build(cls, requests: Sequence[RTCRequest | None], model_targets: Sequence[np.ndarray | None],
              horizon: int, action_dim: int, device: torch.device) -> RTCGuide:
        """Pad each row's model-space left-over to (H, A) and compute its weights."""
        b = len(requests)
        target = torch.zeros(b, horizon, action_dim, dtype=torch.float32)
        weights = torch.zeros(b, horizon, 1, dtype=torch.float32)
        beta, vjp = [1.0] * b, [False] * b
        for i, (req, y) in enumerate(zip(requests, model_targets, strict=True)):
            if req is None:
                continue
            if y is None or y.ndim != 2 or y.shape[0] > horizon or y.shape[1] > action_dim:
                raise ValueError(f"rtc row {i}: prev_actions must be at most ({horizon}, {action_dim}) in model space, "
                                 f"got {None if y is None else y.shape}")
            target[i, : y.shape[0], : y.shape[1]] = torch.from_numpy(np.asarray(y, dtype=np.float32))
            weights[i, :, 0] = prefix_weights(req.inference_delay, req.horizon(), horizon, req.schedule)
            beta[i], vjp[i] = req.max_guidance_weight, req.guidance == "original"
        return cls(target.to(device), weights.to(device), beta, vjp)

    def velocity(self, velocity_fn: Callable[[Tensor], Tensor], x_t: Tensor, time: Tensor) -> Tensor:
        """Guided velocity at ``x_t`` (B, H, A) float32; ``time`` the step's scalar flow time (1 = noise)."""
        t = float(time)
        weight = torch.tensor([guidance_weight(t, b) for b in self.beta], dtype=torch.float64)
        x = x_t.detach().clone()
        if any(self.use_vjp):
            if torch.is_inference_mode_enabled():
                raise RuntimeError("rtc guidance 'original' takes a vector-Jacobian product: call act() under "
                                   "torch.no_grad, not torch.inference_mode (or use guidance 'lerobot')")
            with torch.enable_grad():
                x.requires_grad_(True)
                v = velocity_fn(x)
                x1 = x - time * v
                err = ((self.target - x1) * self.weights).detach()
                correction = torch.autograd.grad(x1, x, err)[0]
            v = v.detach()
            if not all(self.use_vjp):  # rows in lerobot mode: J = I, the correction is the error itself
                rows = torch.tensor(self.use_vjp, device=x.device)[:, None, None]
                correction = torch.where(rows, correction, err)
        else:
            v = velocity_fn(x)
            correction = (self.target - (x - time * v)) * self.weights
        # LeRobot multiplies by a float64 0-dim tensor: the product is float32 with the weight rounded to it
        return v - weight.to(torch.float32).to(x.device)[:, None, None] * correction
