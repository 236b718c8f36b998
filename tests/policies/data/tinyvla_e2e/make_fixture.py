"""End-to-end TinyVLA fixture: the original's own builder and eval path on files stored as the release stores them.

Two steps, two environments:

1. ``checkpoint`` (vla_gym's venv): a tiny LoRA run from ``vla_gym.policies.tinyvla.make_tiny``,
   rewritten to the release's stored dtypes and contents: ``base/model.safetensors`` in **bf16**
   (as ``lesjie/Llava-Pythia-*``), ``checkpoint-8/non_lora_trainables.bin`` holding only the
   non-LoRA trainables (the mm projector and the ``embed_out`` UNet) in **fp32**, the adapter in fp32
   with an ``adapter_config.json`` of the keys peft 0.7 knows. The run dir's name carries ``pythia``
   and ``lora``, which the original builder's ``model_name`` tests look for.
2. ``reference`` (a throwaway venv): TinyVLA @ 94f441827b45e4f76316ef6a0ae443736dc93a5d, run as written:
   ``llava_pythia.model.builder.load_pretrained_model`` (base ``from_pretrained``, ``non_lora_trainables``
   ``load_state_dict(strict=False)``, peft ``PeftModel.from_pretrained`` + ``merge_and_unload``), then the
   Franka eval's image path (``eval_real_franka.get_image`` with the 95 % crop + antialiased resize,
   ``process_batch_to_llava`` with ``expand2square`` and transformers 4.37's ``CLIPImageProcessor``),
   ``policy(**batch, eval=True)`` (``forward_diffusion_head``, diffusers 0.11.1 DDIM) from fixed noise, and
   ``post_process`` (min-max inverse) of ``eval_bc``.

What is set around the original code, each needed to run it here and noted where it happens:
``Tensor.cuda`` is the identity and ``.to("cuda")`` stays on the CPU (CPU run); ``IPython`` is a stub (``position_encoding.py`` imports it
at module level, unused); the builder's module gets ``LlavaPythiaForCausalLM`` (its ``from
llava_pythia.model import *`` imports nothing: ``model/__init__.py`` is empty at this commit);
``from_pretrained`` gets ``torch_dtype=float32`` instead of the eval's hard-coded float16 (fp16
cannot run the droid_diffusion head: the bf16 step embedding meets fp16 Linear weights); the
step embedding, computed in bf16 as written, is cast to float32 before the fp32 Linear (the only
way it runs at fp32; a bf16 value is exact in fp32); the UNet is built with the tiny sizes (the
original hard-codes the release's 256 / [256, 512, 1024]); the tokenizer's ``pad_token_id`` is 1 (as
training sets it; the eval's ``input_ids.ne(pad_token_id)`` needs one).

Usage::

    python3.11 -m venv /tmp/tvref && /tmp/tvref/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/tvref/bin/pip install transformers==4.37.1 diffusers==0.11.1 peft==0.7.1 'huggingface_hub<0.26' \\
        einops safetensors accelerate
    git clone https://github.com/liyaxuanliyaxuan/TinyVLA /tmp/tinyvla_src   # @ 94f4418
    .venv/bin/python tests/policies/data/tinyvla_e2e/make_fixture.py checkpoint
    /tmp/tvref/bin/python tests/policies/data/tinyvla_e2e/make_fixture.py reference /tmp/tinyvla_src
"""

from __future__ import annotations

import ast
import functools
import json
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent
BASE, RUN = OUT / "base", OUT / "pythia_lora_run"
CKPT = RUN / "checkpoint-8"
# (instruction, frame size): 56 = the tiny processor's size (crop + resize back, processor resize a no-op
# in size), 64 and a wide 48 x 72 frame = every resize changes the size (expand2square pads the latter)
CASES = [("put the black bowl on the plate", (56, 56)), ("open the top drawer", (64, 64)),
         ("pick up the bowl", (48, 72))]
PEFT07_KEYS = ("base_model_name_or_path", "bias", "fan_in_fan_out", "inference_mode", "init_lora_weights",
               "layers_pattern", "layers_to_transform", "lora_alpha", "lora_dropout", "modules_to_save",
               "peft_type", "r", "revision", "target_modules", "task_type")


def write_checkpoint() -> None:
    """Step 1: the tiny LoRA run with the release's stored dtypes, into this directory."""
    from safetensors.torch import load_file, save_file

    from vla_gym.policies.tinyvla.make_tiny import write_tiny_tinyvla
    from vla_gym.policies.toolkit.safe_load import load_torch_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        dirs = write_tiny_tinyvla(Path(tmp), seed=3)
        for d in (BASE, RUN):
            shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(dirs["base"], BASE)
        CKPT.mkdir(parents=True)
        shutil.copy(dirs["run"] / "config.json", RUN / "config.json")
        shutil.copy(dirs["run"] / "dataset_stats.json", RUN / "dataset_stats.json")
        for name in ("adapter_model.safetensors", "preprocessor_config.json"):
            shutil.copy(dirs["checkpoint"] / name, CKPT / name)
        adapter_cfg = json.loads((dirs["checkpoint"] / "adapter_config.json").read_text())
        (CKPT / "adapter_config.json").write_text(json.dumps({k: adapter_cfg.get(k) for k in PEFT07_KEYS},
                                                             indent=1))
        base = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(BASE / "model.safetensors")).items()}
        save_file(base, str(BASE / "model.safetensors"), metadata={"format": "pt"})
        cfg = json.loads((BASE / "config.json").read_text())
        (BASE / "config.json").write_text(json.dumps({**cfg, "torch_dtype": "bfloat16"}, indent=1))
        non_lora = load_torch_state_dict(dirs["checkpoint"] / "non_lora_trainables.bin")
        keep = {k: v.float().contiguous() for k, v in non_lora.items()
                if k.startswith(("base_model.model.embed_out.", "base_model.model.gpt_neox.mm_projector."))}
        torch.save(keep, CKPT / "non_lora_trainables.bin")
    print("checkpoint written:", sorted(str(p.relative_to(OUT)) for p in OUT.rglob("*") if p.is_file()))


def extract(file: Path, names: list[str], namespace: dict) -> dict:
    """Compile the named top-level functions or methods of ``file`` into ``namespace`` (as written)."""
    tree = ast.parse(file.read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in names and node.name not in found:
            found[node.name] = node
    assert set(found) == set(names), set(names) - set(found)
    exec(compile(ast.Module(body=list(found.values()), type_ignores=[]), str(file), "exec"), namespace)
    return {n: namespace[n] for n in names}


def run_reference(src: Path) -> None:
    """Step 2: the original's builder + eval path on the checkpoint; writes reference.npz."""
    torch.Tensor.cuda = lambda self, *a, **k: self  # CPU run
    module_to = torch.nn.Module.to
    torch.nn.Module.to = lambda self, *a, **k: module_to(  # CPU run: the builder ends with model.to(device="cuda")
        self, *[x for x in a if x != "cuda"], **{n: v for n, v in k.items() if (n, v) != ("device", "cuda")})
    sys.path[:0] = [str(src), str(src / "llava-pythia")]
    ipython = types.ModuleType("IPython")
    ipython.embed = None  # position_encoding.py: `import IPython; e = IPython.embed` (unused)
    sys.modules["IPython"] = ipython
    from einops import rearrange
    from torchvision import transforms

    import policy_heads.models as heads
    import llava_pythia.model.builder as builder
    from llava_pythia import constants, conversation, mm_utils
    from llava_pythia.model.language_model.pythia.llava_pythia import LlavaPythiaForCausalLM

    # the tiny UNet sizes (the original hard-codes 256 / [256, 512, 1024]; kernel 5 and 8 groups as default)
    heads.ConditionalUnet1D = functools.partial(heads.ConditionalUnet1D, diffusion_step_embed_dim=16,
                                                down_dims=[8, 16, 32])

    class Fp32Builder:  # the eval's builder passes torch_dtype=float16; fp32 is the precision that runs
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return LlavaPythiaForCausalLM.from_pretrained(*args, **{**kwargs, "torch_dtype": torch.float32})

    builder.LlavaPythiaForCausalLM = Fp32Builder  # model/__init__.py is empty: the name is undefined there
    model_path = str(CKPT)
    tokenizer, policy_model, processor, _ = builder.load_pretrained_model(
        model_path, str(BASE), mm_utils.get_model_name_from_path(model_path), False, False, device_map="cpu",
        device="cpu")
    policy_model.eval()
    tokenizer.pad_token_id = 1  # as train_tinyvla sets it
    step_emb = policy_model.embed_out.diffusion_step_encoder[0]
    assert step_emb.dtype == torch.bfloat16
    step_emb.register_forward_hook(lambda mod, inp, out: out.to(torch.float32))  # bf16 embedding -> fp32 Linear
    inv_freq = [b for n, b in policy_model.named_buffers() if n.endswith("inv_freq")]
    assert inv_freq and all(b.dtype == torch.float32 for b in inv_freq)
    assert all(p.dtype == torch.float32 for p in policy_model.parameters())
    state = policy_model.state_dict()  # strict=False loads silently: check the non-LoRA trainables arrived
    non_lora = torch.load(CKPT / "non_lora_trainables.bin", map_location="cpu", weights_only=True)
    assert all(torch.equal(state[k[len("base_model.model."):]], v) for k, v in non_lora.items())

    ns = {"torch": torch, "np": np, "rearrange": rearrange, "transforms": transforms,
          "conv_templates": conversation.conv_templates, "tokenizer_image_token": mm_utils.tokenizer_image_token,
          **{k: getattr(constants, k) for k in dir(constants) if k.isupper()}}
    fns = extract(src / "eval_real_franka.py", ["get_image", "process_batch_to_llava", "expand2square", "pre_process"],
                  ns)
    this = types.SimpleNamespace(policy_config={"conv_mode": "pythia"}, image_processor=processor,
                                 tokenizer=tokenizer, policy=policy_model)
    this.expand2square = lambda imgs, bg: fns["expand2square"](this, imgs, bg)
    # dataset_stats.pkl's float32 arrays, read from its JSON twin (no pickle in the repo)
    stats = {k: np.asarray(v, dtype=np.float32) for k, v in json.loads((RUN / "dataset_stats.json").read_text()).items()}
    post_process = lambda a: ((a + 1) / 2) * (stats["action_max"] - stats["action_min"]) + stats["action_min"]  # noqa: E731

    rng = np.random.default_rng(7)
    out: dict[str, np.ndarray] = {}
    for i, (instruction, (h, w)) in enumerate(CASES):
        cams = {"agentview": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                "wrist": rng.integers(0, 256, (h, w, 3), dtype=np.uint8)}
        state = (stats["qpos_mean"] + stats["qpos_std"] * rng.normal(size=8)).astype(np.float64)
        ts = types.SimpleNamespace(observation={"images": cams})
        image = fns["get_image"](ts, ["agentview", "wrist"], rand_crop_resize=True)
        robot_state = torch.from_numpy(fns["pre_process"](state, "qpos", stats)).float().unsqueeze(0)
        batch = fns["process_batch_to_llava"](this, image, robot_state, instruction)
        with torch.inference_mode():
            torch.manual_seed(100 + i)
            noise = torch.randn((1, 8, 7))
            torch.manual_seed(100 + i)  # forward_diffusion_head draws torch.randn((B, Tp, action_dim)) first
            normed = policy_model(**batch, eval=True)
        out[f"agentview_{i}"], out[f"wrist_{i}"] = cams["agentview"], cams["wrist"]
        out[f"state_{i}"] = state
        out[f"instruction_{i}"] = np.array(instruction)
        out[f"noise_{i}"] = noise.numpy()
        out[f"normalized_{i}"] = normed.float().numpy()
        out[f"actions_{i}"] = post_process(normed.float().numpy())
    np.savez_compressed(OUT / "reference.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    if sys.argv[1:2] == ["checkpoint"]:
        write_checkpoint()
    elif sys.argv[1:2] == ["reference"] and len(sys.argv) == 3:
        run_reference(Path(sys.argv[2]))
    else:
        raise SystemExit("usage: make_fixture.py checkpoint | reference TINYVLA_SRC")
