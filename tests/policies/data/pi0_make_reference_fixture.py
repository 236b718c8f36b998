"""Make the pi0 / pi0.5 reference fixtures by running LeRobot's own PI0Pytorch / PI05Pytorch.

Run in a throwaway venv (NOT vla_gym's), Python 3.12 (lerobot >= 0.5 requires it)::

    /root/.pyenv/versions/3.12.1/bin/python3.12 -m venv /tmp/lrvenv
    /tmp/lrvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/lrvenv/bin/pip install --no-deps lerobot==0.6.1
    /tmp/lrvenv/bin/pip install transformers==5.5.4 "numpy<2.3" "draccus>=0.11.6,<0.12" \
        "huggingface-hub>=1.6,<2" safetensors einops "packaging<26" termcolor tqdm \
        "gymnasium>=1.1.1,<2" scipy "opencv-python-headless<4.14" "Pillow<13" requests
    /tmp/lrvenv/bin/python tests/policies/data/pi0_make_reference_fixture.py tests/policies/data

(lerobot 0.6.1 pins ``transformers>=5.4,<5.6`` for its ``pi`` extra and uses stock transformers
plus its own ``policies/pi_gemma.py``; its torch pin ``<2.12`` is ignored here, torch 2.14.1 is
the project's.)

The only change made to LeRobot is the model SIZE: LeRobot hard-codes the real sizes
(``get_gemma_config`` knows only gemma_2b / gemma_300m; SigLIP So400m and vocab 257152 are set
inside ``PaliGemmaWithExpertModel.__init__``), so this script swaps in tiny Gemma dims and wraps the
two transformers model classes it instantiates so that their configs get a tiny SigLIP and vocab
before construction. Head counts stay the published ones (Gemma 8/1, SigLIP 16). All computation
(``sample_actions``, ``embed_prefix``, ``denoise_step``, ``euler_integrate``, pi_gemma's AdaRMS, the
KV cache) is LeRobot's and transformers' unmodified code.

Writes for each variant V in (pi0, pi05):
- ``pi0_ref_V.safetensors``: ``safetensors.torch.save_model(PI0Pytorch)`` — the exact on-disk layout
  of the reference (no ``model.`` prefix, i.e. openpi naming), random weights.
- ``pi0_ref_V_io.safetensors``: inputs (images_k, image_mask_k, tokens, token_masks, state, noise)
  and outputs ``actions_fp32`` (LeRobot, float32) and ``actions_bf16`` (LeRobot, ``dtype="bfloat16"``,
  weights loaded after construction as ``from_pretrained`` does: kept-fp32 parameters are not rounded).
- ``pi0_ref_keys.json``: key lists of the module state_dict and of the saved file, per variant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import safetensors.torch
import torch
from lerobot.policies.pi0 import modeling_pi0
from lerobot.policies.pi0.configuration_pi0 import PI0Config
from lerobot.policies.pi05 import modeling_pi05
from lerobot.policies.pi05.configuration_pi05 import PI05Config

VOCAB = 300
IMAGE = 32
PATCH = 8
HORIZON = 6
TINY = {
    "gemma_2b": dict(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8),
    "gemma_300m": dict(width=16, depth=2, mlp_dim=32, num_heads=8, num_kv_heads=1, head_dim=8),
}


def tiny_gemma_config(variant: str):
    return modeling_pi0.GemmaConfig(**TINY[variant])


def tiny_paligemma(real_cls):
    def build(config):
        v = config.vision_config
        v.hidden_size, v.num_hidden_layers, v.num_attention_heads = 32, 2, 16
        v.intermediate_size, v.patch_size, v.image_size = 48, PATCH, IMAGE
        v.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = VOCAB
        config._vocab_size = VOCAB  # noqa: SLF001
        config.image_token_index = VOCAB
        return real_cls(config=config)

    return build


def tiny_expert(real_cls):
    def build(config):
        config.vocab_size = VOCAB
        return real_cls(config=config)

    return build


for module in (modeling_pi0, modeling_pi05):
    module.get_gemma_config = tiny_gemma_config
    module.PaliGemmaForConditionalGenerationWithPiGemma = tiny_paligemma(
        module.PaliGemmaForConditionalGenerationWithPiGemma
    )
    module.PiGemmaForCausalLM = tiny_expert(module.PiGemmaForCausalLM)


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
    for k in range(3):  # base, left wrist, right wrist (missing: -1 image, mask False, as LeRobot)
        img = torch.rand(b, 3, IMAGE, IMAGE, generator=gen) * 2 - 1
        out[f"image_{k}"] = img if k < 2 else -torch.ones(b, 3, IMAGE, IMAGE)
        out[f"image_mask_{k}"] = torch.tensor([k < 2, k < 2])
    out["image_mask_1"] = torch.tensor([True, False])  # row 1 also lacks the wrist camera
    out["tokens"] = torch.randint(1, VOCAB, (b, 7), generator=gen)
    out["token_masks"] = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool)
    out["tokens"][1, 4:] = 0
    out["state"] = torch.randn(b, 32, generator=gen)
    out["noise"] = torch.randn(b, HORIZON, 32, generator=gen)
    return out


def run(core: torch.nn.Module, io: dict[str, torch.Tensor], pi05: bool) -> torch.Tensor:
    images = [io[f"image_{k}"] for k in range(3)]
    masks = [io[f"image_mask_{k}"] for k in range(3)]
    args = (images, masks, io["tokens"], io["token_masks"])
    if not pi05:
        args = (*args, io["state"])
    return core.sample_actions(*args, noise=io["noise"].clone(), num_steps=10)


def main(outdir: Path) -> None:
    keys = {}
    for name, pi05 in (("pi0", False), ("pi05", True)):
        cls, cfg_cls = (modeling_pi05.PI05Pytorch, PI05Config) if pi05 else (modeling_pi0.PI0Pytorch, PI0Config)
        config = cfg_cls(chunk_size=HORIZON, n_action_steps=HORIZON, image_resolution=(IMAGE, IMAGE),
                         dtype="float32", device="cpu")
        core = cls(config).eval()
        randomize(core, seed=1 if pi05 else 0)
        io = inputs(seed=2)
        io["actions_fp32"] = run(core, io, pi05).float()
        path = outdir / f"pi0_ref_{name}.safetensors"
        safetensors.torch.save_model(core, str(path))
        keys[name] = {
            "module_state_dict": sorted(core.state_dict()),
            "file": sorted(safetensors.torch.load_file(str(path))),
        }
        config16 = cfg_cls(chunk_size=HORIZON, n_action_steps=HORIZON, image_resolution=(IMAGE, IMAGE),
                           dtype="bfloat16", device="cpu")
        core16 = cls(config16).eval()  # as PI0Policy.from_pretrained: cast at construction, then load
        safetensors.torch.load_model(core16, str(path), strict=True)
        io["actions_bf16"] = run(core16, io, pi05).float()
        safetensors.torch.save_file({k: v.contiguous() for k, v in io.items()},
                                    str(outdir / f"pi0_ref_{name}_io.safetensors"))
        print(name, "fp32 actions[0,0,:4]", io["actions_fp32"][0, 0, :4].tolist())
        print(name, "bf16-fp32 max abs", (io["actions_bf16"] - io["actions_fp32"]).abs().max().item())
    import lerobot
    import transformers

    keys["versions"] = {"lerobot": lerobot.__version__, "transformers": transformers.__version__,
                        "torch": torch.__version__}
    (outdir / "pi0_ref_keys.json").write_text(json.dumps(keys, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
