"""Produce ``pi0_openpi_e2e_reference.npz``: openpi's whole LIBERO path, raw env frames to env actions.

On the tiny openpi-layout dirs ``python -m vla_gym.policies.pi0.make_tiny DIR --layout openpi --variant
pi0|pi05`` writes (seed 0; stored bf16 as the converter writes them, ``precision: bfloat16``), openpi
itself (Physical-Intelligence/openpi @ 15a9616) runs:

- its LIBERO client (``examples/libero/main.py``): ``raw[::-1, ::-1]``, ``image_tools.resize_with_pad``
  to 224 + ``convert_to_uint8`` (``openpi_client``), the 8-D state, the prompt;
- ``Policy.infer(element, noise=...)`` with ``create_trained_policy``'s transforms for ``pi0_libero`` /
  ``pi05_libero`` and ``PI0Pytorch`` loaded by ``safetensors.torch.load_model`` (the policy of
  ``make_pi0_openpi_policy_fixture.py``): in float32 (``*_fp32_*``) and after
  ``to_bfloat16_for_selected_params("bfloat16")`` as ``create_trained_policy`` does (``*_bf16_*``);
- frames at openpi's LIBERO render 256x256, at 200x300 (non-square: PIL resize + padding) and at
  224x224 (``resize_with_pad`` returns it unchanged), so every branch of the client's resize runs.

Substituted, as in ``make_pi0_openpi_policy_fixture.py``: sizes, two import-only modules, the tokenizer
download. Venv (``/tmp/opvenv``; Python 3.12 here, torch taken from ``/tmp/lrvenv`` of
``make_pi0_lerobot_e2e_fixture.py`` through a ``.pth`` placed after the venv's own packages)::

    python3.12 -m venv /tmp/opvenv
    echo /tmp/lrvenv/lib/python3.12/site-packages > /tmp/opvenv/lib/python3.12/site-packages/zz_lrvenv.pth
    /tmp/opvenv/bin/pip install transformers==4.53.2 "numpy<2" safetensors jax==0.5.3 flax==0.10.2 \\
        numpydantic pydantic jaxtyping==0.2.36 beartype==0.19.0 sentencepiece openpi-client einops pillow \\
        ml_collections==1.0.0 augmax
    git --git-dir=<openpi mirror> archive HEAD src packages | tar -x -C /tmp/opsrc
    cp -r /tmp/opsrc/src/openpi/models_pytorch/transformers_replace/* \\
        /tmp/opvenv/lib/python3.12/site-packages/transformers/
    /tmp/opvenv/bin/python tests/policies/data/make_pi0_openpi_e2e_fixture.py /tmp/opsrc /tmp/op_pi0 /tmp/op_pi05
"""

from __future__ import annotations

import hashlib
import pathlib
import sys

import numpy as np
import torch

HERE = pathlib.Path(__file__).parent
SIZES = ((256, 256), (200, 300), (224, 224))  # (H, W): openpi's render, non-square, no resize
TASKS = ("put the black bowl on the plate", "open the top drawer and put the bowl inside",
         "turn on the stove")


def frames(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw (bottom-up) uint8 agentview and wrist frames of size ``SIZES[i]`` (the test rebuilds them)."""
    h, w = SIZES[i]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([255 * x / w, 127 + 100 * np.cos((x + 3 * y) / (7.0 + i)), 255 * y / h], axis=-1)
    base[h // 4: h // 2, w // 3: 3 * w // 4] = [40, 220, 200]
    base[(2 * x + y) % 29 < 3] = [250, 20, 20]
    agent = np.clip(base, 0, 255).astype(np.uint8)
    wrist = np.clip(base[:, ::-1] * 0.6 + 50 + 40 * np.sin(y / (4.0 + i))[..., None], 0, 255).astype(np.uint8)
    return agent, wrist


def state(i: int) -> np.ndarray:
    return np.array([-0.05, 0.01, 1.10, 3.10, 0.10, -0.10, 0.03, -0.03]) + 0.04 * i


def noise(seed: int, horizon: int) -> torch.Tensor:
    return torch.randn((horizon, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def main(src: str, ckpt_pi0: str, ckpt_pi05: str) -> None:
    sys.path.insert(0, str(HERE))
    import make_pi0_openpi_policy_fixture as base

    ckpts = {"pi0": pathlib.Path(ckpt_pi0), "pi05": pathlib.Path(ckpt_pi05)}
    base.setup(pathlib.Path(src), ckpts["pi0"] / "paligemma_tokenizer.model")
    from openpi_client import image_tools

    seeds = tuple(30 + i for i in range(len(SIZES)))
    out: dict[str, np.ndarray] = {"seeds": np.array(seeds)}
    for i in range(len(SIZES)):
        agent, wrist = frames(i)
        out[f"frames_sha256_{i}"] = np.array(hashlib.sha256(agent.tobytes() + wrist.tobytes()).hexdigest())
        out[f"state_{i}"], out[f"task_{i}"] = state(i), np.array(TASKS[i])
    for name, ckpt in ckpts.items():
        out[f"sha256_{name}"] = np.array(hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest())
        pi05 = name == "pi05"
        for precision in ("fp32", "bf16"):
            pol = base.policy(ckpt, pi05, precision == "bf16")
            for i, seed in enumerate(seeds):
                agent, wrist = frames(i)
                img, wrist_img = (image_tools.convert_to_uint8(image_tools.resize_with_pad(
                    np.ascontiguousarray(raw[::-1, ::-1]), 224, 224)) for raw in (agent, wrist))
                element = {"observation/image": img, "observation/wrist_image": wrist_img,
                           "observation/state": state(i), "prompt": TASKS[i]}
                horizon = 10 if pi05 else 50
                out[f"{name}_{precision}_{i}"] = pol.infer(element, noise=noise(seed, horizon).numpy())["actions"]
    np.savez_compressed(HERE / "pi0_openpi_e2e_reference.npz", **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
