"""Produce ``pi0_lerobot_e2e_reference.npz``: ``lerobot-eval``'s whole path, raw env frames to env actions.

From raw env frames to the env action, LeRobot 0.6.1's own code, on the tiny LeRobot dirs that
``python -m vla_gym.policies.pi0.make_tiny DIR --layout lerobot --variant pi0|pi05 [--dtype bfloat16]`` writes (seed 0):

- checkpoint files as LeRobot stores them: pi0 all float32 (``dtype: float32``, as ``lerobot/pi0``);
  pi0.5 as a bf16-trained LeRobot fine-tune ships it (mixed F32/BF16, ``dtype: bfloat16``). The
  script first checks that file against LeRobot's own: the float32 pi0.5 dir loaded with
  ``dtype: bfloat16`` (``PI05Policy(config)`` runs ``to_bfloat16_for_selected_params``,
  ``load_state_dict`` rounds into the bf16 parameters) and written by ``save_pretrained`` holds the
  same tensors with the same dtypes (LeRobot also writes the tied ``embed_tokens``, equal to ``lm_head``);
- the rollout step of ``scripts/lerobot_eval.py``: ``envs.utils.preprocess_observation`` on the raw
  (bottom-up) uint8 frames (``pixels``) and the 8-D state (``agent_pos``), the task, the LIBERO env
  processor (``LiberoEnv().get_env_processors()``: ``LiberoProcessorStep``, the H+W flip), the
  policy's ``policy_preprocessor`` pipeline, ``predict_action_chunk(noise=...)`` (``select_action``
  queues these chunks), the ``policy_postprocessor`` pipeline;
- frames at LeRobot's LIBERO render size 360x360, at openpi's 256x256, and 200x300 (non-square:
  the resize pads), so every branch of ``resize_with_pad_torch`` runs;
- LeRobot in float32 (config ``dtype`` overridden; ``*_fp32_*``) and for pi0.5 also at the
  checkpoint's own ``bfloat16`` (``*_bf16_*``).

Substituted, as in ``make_pi0_lerobot_policy_fixture.py``: sizes only, and the tokenizer object
(the gated ``google/paligemma-3b-pt-224`` cannot be fetched; the tiny SentencePiece model answers the
call as the HF PaliGemma tokenizer would). Venv (``/tmp/lrvenv``, Python 3.12)::

    python3.12 -m venv /tmp/lrvenv
    /tmp/lrvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/lrvenv/bin/pip install --no-deps lerobot==0.6.1
    /tmp/lrvenv/bin/pip install transformers==5.5.4 "numpy<2.3" "draccus>=0.11.6,<0.12" \\
        "huggingface-hub>=1.6,<2" safetensors einops "packaging<26" termcolor tqdm \\
        "gymnasium>=1.1.1,<2" scipy "opencv-python-headless<4.14" "Pillow<13" requests sentencepiece
    .venv/bin/python -m vla_gym.policies.pi0.make_tiny /tmp/lr_pi0 --layout lerobot --variant pi0
    .venv/bin/python -m vla_gym.policies.pi0.make_tiny /tmp/lr_pi05 --layout lerobot --variant pi05
    .venv/bin/python -m vla_gym.policies.pi0.make_tiny /tmp/lr_pi05_bf16 --layout lerobot --variant pi05 \
        --dtype bfloat16
    /tmp/lrvenv/bin/python tests/policies/data/make_pi0_lerobot_e2e_fixture.py /tmp/lr_pi0 /tmp/lr_pi05 \
        /tmp/lr_pi05_bf16
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys
import tempfile

import numpy as np
import torch

HERE = pathlib.Path(__file__).parent
SIZES = ((360, 360), (256, 256), (200, 300))  # (H, W): LeRobot's render, openpi's render, non-square
TASKS = ("put the black bowl on the plate", "open the top drawer and put the bowl inside",
         "turn on the stove")


def frames(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw (bottom-up) uint8 agentview and wrist frames of size ``SIZES[i]`` (the test rebuilds them)."""
    h, w = SIZES[i]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([255 * y / h, 255 * x / w, 127 + 100 * np.sin((3 * x + y) / (6.0 + i))], axis=-1)
    base[h // 3: h // 2, w // 8: w // 2] = [230, 40, 60]
    base[(x + 2 * y) % 37 < 3] = [10, 250, 10]  # thin lines: the two resize filters disagree there
    agent = np.clip(base, 0, 255).astype(np.uint8)
    wrist = np.clip(base[::-1] * 0.7 + 40 + 30 * np.cos(x / (3.0 + i))[..., None], 0, 255).astype(np.uint8)
    return agent, wrist


def state(i: int) -> np.ndarray:
    return np.array([0.02, -0.03, 1.05, 3.0, 0.2, -0.05, 0.035, -0.035], dtype=np.float32) + np.float32(0.03 * i)


def noise(seed: int, horizon: int) -> torch.Tensor:
    return torch.randn((horizon, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def check_bf16_file(ckpt_fp32: pathlib.Path, ckpt_bf16: pathlib.Path, out: pathlib.Path) -> None:
    """``ckpt_bf16`` holds what LeRobot's ``save_pretrained`` writes after a ``dtype: bfloat16`` load."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.pi05 import modeling_pi05
    from safetensors.torch import load_file

    cfg = PreTrainedConfig.from_pretrained(str(ckpt_fp32))
    cfg.dtype = "bfloat16"
    modeling_pi05.PI05Policy.from_pretrained(str(ckpt_fp32), config=cfg).save_pretrained(out)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert json.loads((ckpt_bf16 / "config.json").read_text())["dtype"] == "bfloat16"
    lerobot, ours = load_file(out / "model.safetensors"), load_file(ckpt_bf16 / "model.safetensors")
    tied = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
    assert torch.equal(lerobot.pop(tied), lerobot["model.paligemma_with_expert.paligemma.lm_head.weight"])
    expert_head = "model.paligemma_with_expert.gemma_expert.lm_head.weight"  # unused, random in make_tiny
    assert lerobot.pop(expert_head).dtype == ours.pop(expert_head).dtype == torch.bfloat16
    assert lerobot.keys() == ours.keys(), sorted(set(lerobot) ^ set(ours))
    for key, value in lerobot.items():
        assert value.dtype == ours[key].dtype and torch.equal(value, ours[key]), key


def run(ckpt: pathlib.Path, cls, dtype: str, seeds: tuple[int, ...]) -> list[np.ndarray]:
    """lerobot-eval's step on each fixture frame, LeRobot at ``dtype``."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.envs.configs import LiberoEnv
    from lerobot.envs.utils import preprocess_observation

    from make_pi0_lerobot_policy_fixture import processor_pipelines

    cfg = PreTrainedConfig.from_pretrained(str(ckpt))
    cfg.dtype = dtype
    policy = cls.from_pretrained(str(ckpt), config=cfg).eval()
    pre, post = processor_pipelines(ckpt)
    env_pre, env_post = LiberoEnv().get_env_processors()
    out = []
    for i, seed in enumerate(seeds):
        agent, wrist = frames(i)
        obs = preprocess_observation({"pixels": {"image": agent[None], "image2": wrist[None]},
                                      "agent_pos": state(i)[None]})
        obs["task"] = [TASKS[i]]
        obs = pre(env_pre(obs))
        with torch.inference_mode():
            chunk = policy.predict_action_chunk(obs, noise=noise(seed, policy.config.chunk_size)[None])
        out.append(env_post({"action": post(chunk)})["action"][0].float().numpy())
    return out


def main(ckpt_pi0: str, ckpt_pi05: str, ckpt_pi05_bf16: str) -> None:
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    sys.path.insert(0, str(HERE))
    from make_pi0_lerobot_policy_fixture import patch_sizes

    patch_sizes()
    torch.set_float32_matmul_precision("highest")
    seeds = tuple(20 + i for i in range(len(SIZES)))
    out: dict[str, np.ndarray] = {"seeds": np.array(seeds)}
    for i in range(len(SIZES)):
        agent, wrist = frames(i)
        out[f"frames_sha256_{i}"] = np.array(hashlib.sha256(agent.tobytes() + wrist.tobytes()).hexdigest())
        out[f"state_{i}"], out[f"task_{i}"] = state(i), np.array(TASKS[i])
    with tempfile.TemporaryDirectory() as tmp:
        check_bf16_file(pathlib.Path(ckpt_pi05), pathlib.Path(ckpt_pi05_bf16), pathlib.Path(tmp))
    for name, ckpt, cls, dtypes in (("pi0", pathlib.Path(ckpt_pi0), modeling_pi0.PI0Policy, ("float32",)),
                                    ("pi05", pathlib.Path(ckpt_pi05_bf16), modeling_pi05.PI05Policy,
                                     ("float32", "bfloat16"))):
        out[f"sha256_{name}"] = np.array(hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest())
        for dtype in dtypes:
            for i, actions in enumerate(run(ckpt, cls, dtype, seeds)):
                out[f"{name}_{'fp32' if dtype == 'float32' else 'bf16'}_{i}"] = actions
    np.savez_compressed(HERE / "pi0_lerobot_e2e_reference.npz", **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
