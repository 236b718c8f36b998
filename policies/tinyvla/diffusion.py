"""DDIM sampling of TinyVLA's action chunk with ``diffusers.DDIMScheduler``, configured as the original.

``llava_pythia.py``: ``DDIMScheduler(num_train_timesteps=100, beta_schedule='squaredcos_cap_v2',
clip_sample=True, set_alpha_to_one=True, steps_offset=0, prediction_type='epsilon')``,
``set_timesteps(10)`` (t = 90, 80, ..., 0), ``step(noise_pred, t, x).prev_sample`` (eta = 0).

The scheduler math runs in float32 whatever the model dtype; only the UNet runs in the model
dtype (input cast to it, output cast back). The original hands the scheduler samples in the model
dtype, so each DDIM update is rounded to bf16/fp16. Measured against the original's code
(tests/policies/test_tinyvla_reference.py, tiny head, max |a - a_fp32| of the normalised chunk):
the original all-bf16 0.030, a bf16 head with this fp32 scheduler 0.0064, an fp16 head 0.0012 (the
original cannot run fp16 at all: its bf16 time embedding meets fp16 Linear weights, a dtype error).
No NaN in any of these runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NUM_TRAIN_TIMESTEPS = 100
NUM_INFERENCE_STEPS = 10
SCHEDULER_KWARGS = dict(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2",
                        clip_sample=True, set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon")


def make_scheduler():
    """The original's DDIM scheduler (diffusers)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_KWARGS)


@torch.no_grad()
def denoise(noise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
            scheduler=None, steps: int = NUM_INFERENCE_STEPS) -> torch.Tensor:
    """Run DDIM from ``noise`` (B, T, D) float32; ``noise_fn(x, t)`` predicts epsilon. Returns float32 (B, T, D)."""
    scheduler = scheduler or make_scheduler()
    scheduler.set_timesteps(steps)
    x = noise.to(torch.float32)
    for t in scheduler.timesteps:
        eps = noise_fn(x, t).to(torch.float32)
        x = scheduler.step(model_output=eps, timestep=t, sample=x).prev_sample
    return x
