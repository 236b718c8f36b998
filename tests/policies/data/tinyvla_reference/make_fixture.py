"""Reference outputs of TinyVLA's own code, for tests/policies/test_tinyvla_reference.py.

Runs the original's functions, unmodified, from liyaxuanliyaxuan/TinyVLA @ 94f441827b45e4f76316ef6a0ae443736dc93a5d
in the stack it pins (transformers 4.37.1, diffusers 0.11.1; torch 2.14.1 CPU):

- ``eval_real_franka.get_image`` (the 95 % centre crop + antialiased resize) and
  ``llava_pythia_act_policy.process_batch_to_llava`` / ``expand2square`` (pad, transformers 4.37
  ``CLIPImageProcessor``, the conv_pythia prompt, ``mm_utils.tokenizer_image_token``);
- ``policy_heads/models/droid_unet_diffusion.ConditionalUnet1D`` and
  ``LlavaPythiaForCausalLM.forward_diffusion_head`` (DDIM loop with diffusers 0.11.1's DDIMScheduler).

Functions are taken out of their files with ``ast`` (their modules import the whole training
stack) and run as written. Three things are set around them, each noted where it happens:
``Tensor.cuda`` is the identity (CPU run), the tokenizer's ``pad_token_id`` is 1 (as training sets
it; the eval's ``input_ids.ne(pad_token_id)`` needs one), and for the fp32 reference the UNet's
``SinusoidalPosEmb.dtype`` (hard-coded ``torch.bfloat16`` by its constructor call) is float32 --
the "original math at fp32". The bf16 run keeps the original's dtypes throughout.

Usage (throwaway venv; the tiny tokenizer/preprocessor come from ``make_tiny``)::

    python -m venv /tmp/tvref && /tmp/tvref/bin/pip install torch==2.14.1 torchvision==0.29.1 \\
        transformers==4.37.1 diffusers==0.11.1 'huggingface_hub<0.26' einops
    git clone https://github.com/liyaxuanliyaxuan/TinyVLA /tmp/tinyvla_src   # @ 94f4418
    .venv/bin/python -m vla_gym.policies.tinyvla.make_tiny /tmp/tvla_fx
    /tmp/tvref/bin/python tests/policies/data/tinyvla_reference/make_fixture.py /tmp/tinyvla_src /tmp/tvla_fx/base
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent
INSTRUCTION = "put the black bowl on the plate"


def load_module(name: str, file: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def extract(file: Path, names: list[str], namespace: dict) -> dict:
    """Compile the named top-level functions or class methods of ``file`` into ``namespace``."""
    tree = ast.parse(file.read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in names and node.name not in found:
            found[node.name] = node
    missing = set(names) - set(found)
    assert not missing, missing
    module = ast.Module(body=list(found.values()), type_ignores=[])
    exec(compile(module, str(file), "exec"), namespace)
    return {n: namespace[n] for n in names}


def main(src: Path, tiny_base: Path) -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self  # CPU run
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from einops import rearrange
    from torchvision import transforms
    from transformers import AutoTokenizer, CLIPImageProcessor

    pkg = types.ModuleType("llava_pythia")
    pkg.__path__ = [str(src / "llava-pythia/llava_pythia")]
    sys.modules["llava_pythia"] = pkg
    constants = load_module("llava_pythia.constants", src / "llava-pythia/llava_pythia/constants.py")
    conversation = load_module("llava_pythia.conversation", src / "llava-pythia/llava_pythia/conversation.py")
    mm_utils = load_module("llava_pythia.mm_utils", src / "llava-pythia/llava_pythia/mm_utils.py")
    unet_mod = load_module("droid_unet_diffusion", src / "policy_heads/models/droid_unet_diffusion.py")

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"):
        shutil.copy(tiny_base / name, OUT / name)
    tokenizer = AutoTokenizer.from_pretrained(str(OUT), use_fast=True)
    tokenizer.pad_token_id = 1  # as train_tinyvla sets it; process_batch_to_llava compares ids with it
    processor = CLIPImageProcessor.from_pretrained(str(OUT))

    ns = {"torch": torch, "np": np, "rearrange": rearrange, "transforms": transforms,
          "conv_templates": conversation.conv_templates, "tokenizer_image_token": mm_utils.tokenizer_image_token,
          **{k: getattr(constants, k) for k in dir(constants) if k.isupper()}}
    fns = extract(src / "eval_real_franka.py", ["get_image", "process_batch_to_llava", "expand2square"], ns)

    # ---- image path + prompt --------------------------------------------------------------
    rng = np.random.default_rng(0)
    frames = {"agentview": rng.integers(0, 256, (56, 56, 3), dtype=np.uint8),
              "wrist": rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)}
    wide = {"agentview": rng.integers(0, 256, (42, 64, 3), dtype=np.uint8),
            "wrist": rng.integers(0, 256, (64, 42, 3), dtype=np.uint8)}
    policy = types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32,
                                   config=types.SimpleNamespace(mm_use_im_start_end=False))
    this = types.SimpleNamespace(policy_config={"conv_mode": "pythia"}, image_processor=processor,
                                 tokenizer=tokenizer, policy=policy)
    this.expand2square = lambda imgs, bg: fns["expand2square"](this, imgs, bg)
    out: dict[str, np.ndarray] = {}
    for tag, cams in (("square", frames), ("wide", wide)):
        ts = types.SimpleNamespace(observation={"images": cams})
        for crop in (True, False):
            if tag == "wide":  # the two cameras differ in shape: run them one at a time through the eval
                pixels = []
                for cam in cams:
                    img = fns["get_image"](types.SimpleNamespace(observation={"images": {cam: cams[cam]}}), [cam],
                                           rand_crop_resize=crop)
                    img = torch.cat([img, img], dim=1)  # process_batch_to_llava chunks two cameras
                    batch = fns["process_batch_to_llava"](this, img, torch.zeros(1, 8), INSTRUCTION)
                    pixels.append(batch["images"][0])
                out[f"pixels_{tag}_crop{int(crop)}"] = torch.stack(pixels).numpy()
            else:
                img = fns["get_image"](ts, list(cams), rand_crop_resize=crop)
                batch = fns["process_batch_to_llava"](this, img, torch.zeros(1, 8), INSTRUCTION)
                out[f"pixels_{tag}_crop{int(crop)}"] = torch.cat([batch["images"], batch["images_r"]]).numpy()
                out["input_ids"] = batch["input_ids"][0].numpy()
        for cam, frame in cams.items():
            out[f"frame_{tag}_{cam}"] = frame
    conv = conversation.conv_templates["pythia"].copy()
    conv.append_message(conv.roles[0], constants.DEFAULT_IMAGE_TOKEN + "\n" + INSTRUCTION)
    conv.append_message(conv.roles[1], None)
    out["prompt"] = np.array(conv.get_prompt() + " <|endoftext|>")

    # ---- UNet + DDIM ----------------------------------------------------------------------
    fdh = extract(src / "llava-pythia/llava_pythia/model/language_model/pythia/llava_pythia.py",
                  ["forward_diffusion_head"], {"torch": torch})["forward_diffusion_head"]
    torch.manual_seed(0)
    unet = unet_mod.ConditionalUnet1D(input_dim=7, global_cond_dim=32, diffusion_step_embed_dim=16,
                                      down_dims=[8, 16, 32], kernel_size=5, n_groups=8, state_dim=8).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.2)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(OUT / "unet.safetensors"))
    hidden = torch.randn(1, 23, 32)
    states = torch.randn(1, 8)

    def head(dtype: torch.dtype) -> types.SimpleNamespace:
        # the scheduler exactly as LlavaPythiaForCausalLM.__init__ builds it for droid_diffusion
        sched = DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                              set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon")
        return types.SimpleNamespace(noise_scheduler=sched, embed_out=unet.to(dtype), num_queries=8, action_dim=7,
                                     num_inference_timesteps=10)

    unet.diffusion_step_encoder[0].dtype = torch.float32  # fp32 math (the constructor hard-codes bf16)
    with torch.no_grad():
        torch.manual_seed(123)
        out["noise"] = torch.randn((1, 8, 7)).numpy()
        torch.manual_seed(123)
        out["actions_fp32"] = fdh(head(torch.float32), None, hidden, states, None).numpy()
        out["eps_t50_fp32"] = unet(torch.from_numpy(out["noise"]), torch.tensor(50), global_cond=hidden,
                                   states=states).numpy()
        unet.diffusion_step_encoder[0].dtype = torch.bfloat16  # the original as written, all bf16
        torch.manual_seed(123)
        out["actions_bf16_original"] = fdh(head(torch.bfloat16), None, hidden.bfloat16(), states.bfloat16(),
                                           None).float().numpy()
        try:  # the builder loads fp16; the time embedding stays bf16 (hard-coded)
            torch.manual_seed(123)
            fdh(head(torch.float16), None, hidden.half(), states.half(), None)
            out["fp16_original_error"] = np.array("")
        except RuntimeError as exc:
            out["fp16_original_error"] = np.array(f"{type(exc).__name__}: {exc}")
    out["hidden"] = hidden.numpy()
    out["states"] = states.numpy()
    np.savez_compressed(OUT / "reference.npz", **out)
    print({k: v.shape for k, v in out.items()})
    print("fp16 original:", out["fp16_original_error"])
    print("bf16 original: finite", bool(np.isfinite(out["actions_bf16_original"]).all()),
          "max |bf16 - fp32|", float(np.nanmax(np.abs(out["actions_bf16_original"] - out["actions_fp32"]))))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
