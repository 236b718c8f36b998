"""Produce ``pi0_lerobot_rtc_reference.npz``: LeRobot 0.6.1's own real-time chunking on the tiny pi0 / pi0.5 dirs.

LeRobot's path with RTC on (``config.rtc_config = RTCConfig(...)``, so ``init_rtc_processor`` builds its
``RTCProcessor`` and ``sample_actions`` routes each Euler step through ``RTCProcessor.denoise_step``):
the ``lerobot-eval`` step of ``make_pi0_lerobot_e2e_fixture.py`` (raw 360x360 frames ->
``preprocess_observation`` -> LIBERO env processor -> ``policy_preprocessor``) then, under
``torch.no_grad`` (RTC needs autograd, so not ``inference_mode``):

1. ``prev = predict_action_chunk(obs_0, noise=n_0)`` without guidance (``prev_chunk_left_over=None``
   makes ``denoise_step`` return the plain velocity), normalised (1, 50, 7);
2. ``Y = prev[0, s:]``, the left-over after ``s`` executed actions, LeRobot's caller contract
   (normalised model space, 7 wide; LeRobot zero-pads it to (50, 32));
3. ``predict_action_chunk(obs_1, noise=n_1, inference_delay=d, prev_chunk_left_over=Y,
   execution_horizon=e)`` with the case's schedule and ``max_guidance_weight``, then the
   ``policy_postprocessor`` (env actions). ``Y`` through the postprocessor is stored too (the env-space
   left-over the test feeds ``RTCRequest(space="env")``).

float32 (config ``dtype`` overridden). Venv and sizes as ``make_pi0_lerobot_e2e_fixture.py``::

    .venv/bin/python -m vla_gym.policies.pi0.make_tiny /tmp/rtc_pi0 --layout lerobot --variant pi0
    .venv/bin/python -m vla_gym.policies.pi0.make_tiny /tmp/rtc_pi05 --layout lerobot --variant pi05
    /tmp/lrvenv/bin/python tests/policies/data/make_pi0_lerobot_rtc_fixture.py /tmp/rtc_pi0 /tmp/rtc_pi05
"""

from __future__ import annotations

import hashlib
import pathlib
import sys

import numpy as np
import torch

HERE = pathlib.Path(__file__).parent
# (name, variant, schedule, inference_delay d, executed s, execution_horizon e, max_guidance_weight)
CASES = (
    ("pi0_linear", "pi0", "LINEAR", 3, 10, 10, 10.0),  # LeRobot's defaults (LINEAR, e = 10, beta = 10)
    ("pi0_exp", "pi0", "EXP", 4, 25, 20, 5.0),
    ("pi05_zeros", "pi05", "ZEROS", 2, 10, 8, 10.0),
    ("pi05_ones", "pi05", "ONES", 5, 30, 12, 10.0),
    ("pi05_exp_clamped", "pi05", "EXP", 3, 40, 30, 10.0),  # e > len(Y) = 10: LeRobot clamps e to 10
)
PREV_SEED, NEW_SEED = 31, 32


def run_case(ckpt: pathlib.Path, cls, schedule: str, d: int, s: int, e: int, beta: float) -> dict[str, np.ndarray]:
    from lerobot.configs import RTCAttentionSchedule
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.envs.configs import LiberoEnv
    from lerobot.envs.utils import preprocess_observation
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    from make_pi0_lerobot_e2e_fixture import TASKS, frames, noise, state
    from make_pi0_lerobot_policy_fixture import processor_pipelines

    cfg = PreTrainedConfig.from_pretrained(str(ckpt))
    cfg.dtype = "float32"
    cfg.rtc_config = RTCConfig(prefix_attention_schedule=RTCAttentionSchedule[schedule], max_guidance_weight=beta,
                               execution_horizon=e)
    policy = cls.from_pretrained(str(ckpt), config=cfg).eval()
    assert policy.model.rtc_processor is not None and policy.model._rtc_enabled()  # noqa: SLF001
    pre, post = processor_pipelines(ckpt)
    env_pre, env_post = LiberoEnv().get_env_processors()

    def obs(i: int) -> dict:
        agent, wrist = frames(i)
        o = preprocess_observation({"pixels": {"image": agent[None], "image2": wrist[None]},
                                    "agent_pos": state(i)[None]})
        o["task"] = [TASKS[i]]
        return pre(env_pre(o))

    horizon = policy.config.chunk_size
    with torch.no_grad():
        prev = policy.predict_action_chunk(obs(0), noise=noise(PREV_SEED, horizon)[None])
        left = prev[0, s:].clone()
        new = policy.predict_action_chunk(obs(1), noise=noise(NEW_SEED, horizon)[None], inference_delay=d,
                                          prev_chunk_left_over=left, execution_horizon=e)
        plain = policy.predict_action_chunk(obs(1), noise=noise(NEW_SEED, horizon)[None])
    weights = policy.model.rtc_processor.get_prefix_weights(d, min(e, len(left)), horizon)
    return {
        "prev_model": prev[0].float().numpy(),
        "left_model": left.float().numpy(),
        "left_env": env_post({"action": post(left[None])})["action"][0].float().numpy(),
        "new_model": new[0].float().numpy(),
        "new_env": env_post({"action": post(new)})["action"][0].float().numpy(),
        "plain_model": plain[0].float().numpy(),
        "weights": weights.float().numpy(),
    }


def main(ckpt_pi0: str, ckpt_pi05: str) -> None:
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    sys.path.insert(0, str(HERE))
    from make_pi0_lerobot_policy_fixture import patch_sizes

    patch_sizes()
    torch.set_float32_matmul_precision("highest")
    dirs = {"pi0": (pathlib.Path(ckpt_pi0), modeling_pi0.PI0Policy),
            "pi05": (pathlib.Path(ckpt_pi05), modeling_pi05.PI05Policy)}
    out: dict[str, np.ndarray] = {"prev_seed": np.array(PREV_SEED), "new_seed": np.array(NEW_SEED)}
    for variant, (ckpt, _) in dirs.items():
        out[f"sha256_{variant}"] = np.array(hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest())
    for name, variant, schedule, d, s, e, beta in CASES:
        ckpt, cls = dirs[variant]
        out[f"{name}_params"] = np.array([d, s, e, beta])
        out[f"{name}_schedule"] = np.array(schedule)
        for key, value in run_case(ckpt, cls, schedule, d, s, e, beta).items():
            out[f"{name}_{key}"] = value
    np.savez_compressed(HERE / "pi0_lerobot_rtc_reference.npz", **out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
