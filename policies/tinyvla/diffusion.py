"""DDIM sampling of TinyVLA's action chunk with ``diffusers.DDIMScheduler``, configured as the original.

``llava_pythia.py``: ``DDIMScheduler(num_train_timesteps=100, beta_schedule='squaredcos_cap_v2',
clip_sample=True, set_alpha_to_one=True, steps_offset=0, prediction_type='epsilon')``,
``set_timesteps(10)`` (t = 90, 80, ..., 0), ``step(noise_pred, t, x).prev_sample`` (eta = 0).

The original hands the scheduler the samples in the model's dtype (``naction.to(hidden_states.dtype)``;
``step`` keeps that dtype), so with a bf16 model each DDIM update is rounded to bf16. ``sample_dtype``
says which dtype the samples live in: the model dtype for ``precision="reference"`` (fp32 weights
give fp32 samples, exactly the original at fp32), float32 for ``precision="fp32"`` whatever the
weights. Measured against the original's code (tests/policies/test_tinyvla_reference.py, tiny head,
max |a - a_fp32| of the normalised chunk): the original all-bf16 0.030, a bf16 head with an fp32
scheduler 0.0064, an fp16 head 0.0012 (the original cannot run fp16 at all: its bf16 time embedding
meets fp16 Linear weights, a dtype error). No NaN in any of these runs.
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
            scheduler=None, steps: int = NUM_INFERENCE_STEPS,
            sample_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Run DDIM from ``noise`` (B, T, D); ``noise_fn(x, t)`` predicts epsilon.

    Samples and the scheduler's update live in ``sample_dtype`` (see the module docstring).
    Returns float32 (B, T, D).
    """
    scheduler = scheduler or make_scheduler()
    scheduler.set_timesteps(steps)
    x = noise.to(sample_dtype)
    for t in scheduler.timesteps:
        eps = noise_fn(x, t).to(sample_dtype)
        x = scheduler.step(model_output=eps, timestep=t, sample=x).prev_sample
    return x.to(torch.float32)
