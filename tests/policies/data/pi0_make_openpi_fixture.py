"""Make the pi0 / pi0.5 openpi fixtures by running openpi's own PyTorch ``PI0Pytorch.sample_actions``.

openpi's PyTorch model needs ``transformers==4.53.2`` with openpi's ``transformers_replace`` files
copied over that transformers (its README's "PyTorch Support"; checked by
``transformers.models.siglip.check``). That is done ONLY in this throwaway venv, never in
vla_gym's::

    python3.11 -m venv /tmp/opvenv
    /tmp/opvenv/bin/pip install torch==2.14.1
    /tmp/opvenv/bin/pip install transformers==4.53.2 "numpy<2.3" safetensors
    git --git-dir=<openpi mirror> archive HEAD src/openpi/models_pytorch | tar -x -C /tmp/opsrc
    cp -r /tmp/opsrc/src/openpi/models_pytorch/transformers_replace/* \
        /tmp/opvenv/lib/python3.11/site-packages/transformers/
    /tmp/opvenv/bin/python tests/policies/data/pi0_make_openpi_fixture.py /tmp/opsrc/src tests/policies/data

openpi commit used: 15a9616a00943ada6c20a0f158e3adb39df2ccac (Physical-Intelligence/openpi).

Only sizes and two import-only modules are substituted; all computation (``embed_prefix``,
``embed_suffix``, the KV-cache prefix pass, ``denoise_step``, the Euler loop, the patched
transformers Gemma/SigLIP/PaliGemma with AdaRMS) is openpi's:
- ``openpi.models.gemma`` (JAX/flax) is replaced by a module whose ``get_config`` returns tiny
  Gemma dims (published head counts 8/1); openpi's torch code only reads those six numbers.
- ``openpi.shared.image_tools`` (JAX) is an empty module: resizing is not reached because the
  preprocessing is called with the fixture's image size (``image_resolution=(32, 32)``).
- the two transformers model classes openpi instantiates are wrapped so their configs get a tiny
  SigLIP (16 heads) and vocabulary before construction (openpi hard-codes So400m and 257152).
- ``torch.set_float32_matmul_precision("high")`` (set by ``PI0Pytorch.__init__`` for CUDA TF32) is
  reset to "highest" so the CPU float32 output is plain float32.

Writes for each variant V in (pi0, pi05): ``pi0_openpi_V.safetensors`` (``save_model`` of
``PI0Pytorch``: the openpi-converted file layout), ``pi0_openpi_V_io.safetensors`` (inputs and
``actions_fp32``; ``actions_bf16`` from openpi's bf16 precision policy
``to_bfloat16_for_selected_params``), and ``pi0_openpi_keys.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import types
from pathlib import Path

import safetensors.torch
import torch

VOCAB = 300
IMAGE = 32
PATCH = 8
HORIZON = 6
KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")


@dataclasses.dataclass
class TinyGemma:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


TINY = {
    "gemma_2b": TinyGemma(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8),
    "gemma_300m": TinyGemma(width=16, depth=2, mlp_dim=32, num_heads=8, num_kv_heads=1, head_dim=8),
}


def install_stubs(src: Path) -> None:
    sys.path.insert(0, str(src))
    import openpi  # noqa: F401  (namespace package from src/)

    gemma = types.ModuleType("openpi.models.gemma")
    gemma.get_config = TINY.__getitem__
    models = types.ModuleType("openpi.models")
    models.gemma = gemma
    shared = types.ModuleType("openpi.shared")
    shared.image_tools = types.ModuleType("openpi.shared.image_tools")
    sys.modules.update({"openpi.models": models, "openpi.models.gemma": gemma, "openpi.shared": shared,
                        "openpi.shared.image_tools": shared.image_tools})


def patch_sizes() -> None:
    from openpi.models_pytorch import gemma_pytorch, pi0_pytorch

    real_pali, real_gemma = gemma_pytorch.PaliGemmaForConditionalGeneration, gemma_pytorch.GemmaForCausalLM

    def pali(config):
        v = config.vision_config
        v.hidden_size, v.num_hidden_layers, v.num_attention_heads = 32, 2, 16
        v.intermediate_size, v.patch_size, v.image_size = 48, PATCH, IMAGE
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
    pi0_pytorch._preprocessing.preprocess_observation_pytorch = functools.partial(  # noqa: SLF001
        pi0_pytorch._preprocessing.preprocess_observation_pytorch, image_resolution=(IMAGE, IMAGE)  # noqa: SLF001
    )


def build(pi05: bool, dtype: str):
    from openpi.models_pytorch.pi0_pytorch import PI0Pytorch

    config = types.SimpleNamespace(pi05=pi05, paligemma_variant="gemma_2b", action_expert_variant="gemma_300m",
                                   dtype=dtype, action_dim=32, action_horizon=HORIZON, pytorch_compile_mode=None)
    model = PI0Pytorch(config).eval()
    torch.set_float32_matmul_precision("highest")
    return model


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (also where training inits zeros: norms, AdaRMS dense)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def inputs(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    b = 2
    out = {}
    for k in range(3):  # missing right wrist: zeros image + mask False (openpi LiberoInputs)
        img = torch.rand(b, 3, IMAGE, IMAGE, generator=gen) * 2 - 1
        out[f"image_{k}"] = img if k < 2 else torch.zeros(b, 3, IMAGE, IMAGE)
        out[f"image_mask_{k}"] = torch.tensor([k < 2, k < 2])
    out["image_mask_1"] = torch.tensor([True, False])
    out["tokens"] = torch.randint(1, VOCAB, (b, 7), generator=gen)
    out["token_masks"] = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool)
    out["tokens"][1, 4:] = 0
    out["state"] = torch.randn(b, 32, generator=gen)
    out["noise"] = torch.randn(b, HORIZON, 32, generator=gen)
    return out


def run(model, io: dict[str, torch.Tensor]) -> torch.Tensor:
    observation = types.SimpleNamespace(
        images={key: io[f"image_{k}"] for k, key in enumerate(KEYS)},
        image_masks={key: io[f"image_mask_{k}"] for k, key in enumerate(KEYS)},
        state=io["state"], tokenized_prompt=io["tokens"], tokenized_prompt_mask=io["token_masks"],
        token_ar_mask=None, token_loss_mask=None,
    )
    return model.sample_actions("cpu", observation, noise=io["noise"].clone(), num_steps=10).float()


def main(src: Path, outdir: Path) -> None:
    install_stubs(src)
    patch_sizes()
    keys = {}
    for name, pi05 in (("pi0", False), ("pi05", True)):
        model = build(pi05, "float32")
        randomize(model, seed=11 if pi05 else 10)
        io = inputs(seed=12)
        io["actions_fp32"] = run(model, io)
        path = outdir / f"pi0_openpi_{name}.safetensors"
        safetensors.torch.save_model(model, str(path))
        keys[name] = {"module_state_dict": sorted(model.state_dict()),
                      "file": sorted(safetensors.torch.load_file(str(path)))}
        model16 = build(pi05, "float32")
        safetensors.torch.load_model(model16, str(path))
        model16.paligemma_with_expert.to_bfloat16_for_selected_params("bfloat16")
        io["actions_bf16"] = run(model16, io)
        safetensors.torch.save_file({k: v.contiguous() for k, v in io.items()},
                                    str(outdir / f"pi0_openpi_{name}_io.safetensors"))
        print(name, "fp32 actions[0,0,:4]", io["actions_fp32"][0, 0, :4].tolist())
        print(name, "bf16-fp32 max abs", (io["actions_bf16"] - io["actions_fp32"]).abs().max().item())
    import transformers

    keys["versions"] = {"openpi": "15a9616a00943ada6c20a0f158e3adb39df2ccac",
                        "transformers": transformers.__version__ + " + openpi transformers_replace",
                        "torch": torch.__version__}
    (outdir / "pi0_openpi_keys.json").write_text(json.dumps(keys, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
