"""Produce ``pi0_openpi_policy_reference.npz``: openpi's whole LIBERO inference path on the tiny checkpoints.

For the tiny openpi-layout checkpoints that ``python -m vla_gym.policies.pi0.make_tiny DIR --layout openpi
--variant pi0|pi05`` writes (seed 0; their sha256 is stored and checked by the test), this runs, unmodified:

- openpi's LIBERO client (``examples/libero/main.py``): ``raw[::-1, ::-1]``, ``image_tools.resize_with_pad``
  to 224 + ``convert_to_uint8``, the 8-D state, the prompt;
- ``openpi.policies.policy.Policy.infer(obs, noise=...)`` with the transform lists of
  ``policy_config.create_trained_policy`` for ``pi0_libero`` / ``pi05_libero``
  (``InjectDefaultPrompt``, ``LiberoInputs``, [``DeltaActions``], ``Normalize``, ``ResizeImages``,
  ``TokenizePrompt``, ``PadStatesAndActions`` -> ``PI0Pytorch.sample_actions`` -> ``Unnormalize``,
  [``AbsoluteActions``], ``LiberoOutputs``), norm stats from ``assets/physical-intelligence/libero``;
- ``PI0Pytorch`` loaded with ``safetensors.torch.load_model`` (openpi's ``load_pytorch``), in float32
  (``actions_fp32``) and after ``to_bfloat16_for_selected_params("bfloat16")`` as ``create_trained_policy``
  does (``actions_bf16``).

Substituted, as in ``pi0_make_openpi_fixture.py``: sizes only (``gemma.get_config`` returns the tiny
Gemma dims; the two transformers classes get a tiny SigLIP: width 32, 2 layers, 16 heads, patch 56 at
224 px, and the tokenizer's 400-piece vocabulary), ``orbax``/``fsq_tokenizer`` imports (unused), and
``download.maybe_download`` (returns the checkpoint's tiny ``paligemma_tokenizer.model``).
Venv: the one of ``make_pi0_openpi_fixture.py`` plus ``transformers==4.53.2 safetensors`` with openpi's
``transformers_replace`` copied over it (openpi README "PyTorch Support")::

    python make_pi0_openpi_policy_fixture.py /path/to/openpi CKPT_PI0 CKPT_PI05
"""

from __future__ import annotations

import hashlib
import pathlib
import sys
import types

import numpy as np
import torch

HERE = pathlib.Path(__file__).parent
TINY_GEMMA = {"gemma_2b": dict(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8),
              "gemma_300m": dict(width=16, depth=2, mlp_dim=32, num_heads=8, num_kv_heads=1, head_dim=8)}
VOCAB = 400
SEEDS = (3, 4)
TASKS = ("pick up the black bowl between the plate and the ramekin and place it on the plate", "open the drawer")


def frames(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two raw (bottom-up) 256x256 asymmetric frames, agentview and wrist (smooth: the fixture stays small)."""
    y, x = np.mgrid[0:256, 0:256].astype(np.float64)
    base = np.stack([x, y, 127 + 100 * np.sin((x + 2 * y) / (9.0 + seed))], axis=-1)
    base[40 + seed:90, 30:150] = [200, 30, 40]
    agent = np.clip(base, 0, 255).astype(np.uint8)
    wrist = np.clip(base[::-1, ::-1] * 0.5 + 60 + 40 * np.cos(x / (5.0 + seed))[..., None], 0, 255).astype(np.uint8)
    return agent, wrist


def setup(src: pathlib.Path, tokenizer: pathlib.Path) -> None:
    sys.path.insert(0, str(src / "src"))
    for name in ("orbax", "orbax.checkpoint", "openpi.models.utils", "openpi.models.utils.fsq_tokenizer"):
        sys.modules[name] = types.ModuleType(name)
    import openpi.shared  # noqa: F401

    download = types.ModuleType("openpi.shared.download")
    download.maybe_download = lambda *a, **k: tokenizer
    sys.modules["openpi.shared.download"] = download
    import dataclasses

    from openpi.models import gemma

    @dataclasses.dataclass
    class Tiny:
        width: int
        depth: int
        mlp_dim: int
        num_heads: int
        num_kv_heads: int
        head_dim: int

    gemma.get_config = lambda variant: Tiny(**TINY_GEMMA[variant])
    from openpi.models_pytorch import gemma_pytorch

    real_pali, real_gemma = gemma_pytorch.PaliGemmaForConditionalGeneration, gemma_pytorch.GemmaForCausalLM

    def pali(config):
        v = config.vision_config
        v.hidden_size, v.num_hidden_layers, v.num_attention_heads = 32, 2, 16
        v.intermediate_size, v.patch_size, v.image_size = 48, 56, 224
        v.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = VOCAB
        config._vocab_size = VOCAB  # noqa: SLF001
        config.image_token_index = VOCAB
        return real_pali(config=config)

    def expert(config):
        config.vocab_size = VOCAB
        return real_gemma(config=config)

    gemma_pytorch.PaliGemmaForConditionalGeneration = pali
    gemma_pytorch.GemmaForCausalLM = expert


def policy(ckpt: pathlib.Path, pi05: bool, bf16: bool):
    import safetensors.torch
    from openpi import transforms as T  # noqa: N812
    from openpi.models import model as _model
    from openpi.models import tokenizer as _tokenizer
    from openpi.models_pytorch.pi0_pytorch import PI0Pytorch
    from openpi.policies import libero_policy
    from openpi.policies import policy as _policy
    from openpi.shared import normalize

    horizon = 10 if pi05 else 50
    config = types.SimpleNamespace(pi05=pi05, paligemma_variant="gemma_2b", action_expert_variant="gemma_300m",
                                   dtype="float32", action_dim=32, action_horizon=horizon, pytorch_compile_mode=None)
    model = PI0Pytorch(config)
    torch.set_float32_matmul_precision("highest")
    safetensors.torch.load_model(model, str(ckpt / "model.safetensors"))
    if bf16:
        model.paligemma_with_expert.to_bfloat16_for_selected_params("bfloat16")
    model_type = _model.ModelType.PI05 if pi05 else _model.ModelType.PI0
    stats = normalize.load(ckpt / "assets" / "physical-intelligence" / "libero")
    data_in, data_out = [libero_policy.LiberoInputs(model_type=model_type)], [libero_policy.LiberoOutputs()]
    if not pi05:  # pi0_libero: extra_delta_transform=True
        mask = T.make_bool_mask(6, -1)
        data_in, data_out = [*data_in, T.DeltaActions(mask)], [T.AbsoluteActions(mask), *data_out]
    tokenizer = _tokenizer.PaligemmaTokenizer(200 if pi05 else 48)
    return _policy.Policy(
        model,
        transforms=[T.InjectDefaultPrompt(None), *data_in, T.Normalize(stats, use_quantiles=pi05),
                    T.ResizeImages(224, 224), T.TokenizePrompt(tokenizer, discrete_state_input=False),
                    T.PadStatesAndActions(32)],
        output_transforms=[T.Unnormalize(stats, use_quantiles=pi05), *data_out],
        is_pytorch=True, pytorch_device="cpu",
    )


def main(src: str, ckpt_pi0: str, ckpt_pi05: str) -> None:
    ckpts = {"pi0": pathlib.Path(ckpt_pi0), "pi05": pathlib.Path(ckpt_pi05)}
    setup(pathlib.Path(src), ckpts["pi0"] / "paligemma_tokenizer.model")
    from openpi_client import image_tools

    out: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    for i, seed in enumerate(SEEDS):
        agent, wrist = frames(seed)  # the test rebuilds them with this function; their hash is stored
        raw[f"agentview_{i}"], raw[f"wrist_{i}"] = agent, wrist
        out[f"frames_sha256_{i}"] = np.array(hashlib.sha256(agent.tobytes() + wrist.tobytes()).hexdigest())
        out[f"state_{i}"] = np.array([-0.05, 0.01, 1.10, 3.10, 0.10, -0.10, 0.03, -0.03]) + 0.05 * i
        out[f"task_{i}"], out[f"seed_{i}"] = np.array(TASKS[i]), np.array(seed)
    for name, ckpt in ckpts.items():
        out[f"sha256_{name}"] = np.array(hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest())
        pi05 = name == "pi05"
        horizon = 10 if pi05 else 50
        for precision in ("fp32", "bf16"):
            pol = policy(ckpt, pi05, precision == "bf16")
            for i, seed in enumerate(SEEDS):
                prep = [image_tools.convert_to_uint8(image_tools.resize_with_pad(
                    np.ascontiguousarray(raw[f"{cam}_{i}"][::-1, ::-1]), 224, 224)) for cam in ("agentview", "wrist")]
                element = {"observation/image": prep[0], "observation/wrist_image": prep[1],
                           "observation/state": out[f"state_{i}"], "prompt": TASKS[i]}
                noise = torch.randn((horizon, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
                out[f"{name}_{precision}_{i}"] = pol.infer(element, noise=noise.numpy())["actions"]
    np.savez_compressed(HERE / "pi0_openpi_policy_reference.npz", **out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
