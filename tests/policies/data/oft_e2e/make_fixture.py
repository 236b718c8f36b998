"""End-to-end OpenVLA-OFT fixture: openvla-oft's own eval code on a tiny checkpoint stored as the release stores it.

Two steps, two environments:

1. ``checkpoint`` (vla_gym's venv): the tiny OFT checkpoint of ``vla_gym.policies.openvla_oft.make_tiny``
   (merged VLA weights in **bf16**, ``action_head--150000_checkpoint.pt`` in **bf16**,
   ``proprio_projector--150000_checkpoint.pt`` in **fp32**, both with DDP ``module.`` keys, as
   ``vla-scripts/finetune.py`` saves them), copied here without its ``lora_adapter/``.
2. ``reference`` (a throwaway venv): moojink/openvla-oft @ 213c5ff, its code as written:
   ``prismatic/extern/hf/modeling_prismatic.OpenVLAForActionPrediction`` (``from_pretrained``),
   ``processing_prismatic.PrismaticProcessor``, ``prismatic/models/{action_heads,projectors}.py``; from
   ``experiments/robot/openvla_utils.py`` ``get_action_head``, ``get_proprio_projector``,
   ``_load_dataset_stats``, ``resize_image_for_policy`` (JPEG round trip + TF lanczos3), ``get_vla_action``
   (``prepare_images_for_vla`` with the TF centre crop, ``normalize_proprio``, ``predict_action``), and
   ``experiments/robot/robot_utils.py``'s ``normalize_gripper_action`` + ``invert_gripper_action`` (as
   ``run_libero_eval.process_action``). Frames are 256 x 256 (the LIBERO render size), fed to
   ``resize_image_for_policy(img, 224)`` as ``run_libero_eval.prepare_observation`` does. transformers is
   4.40.1 with ``models/llama/modeling_llama.py`` replaced by moojink/transformers-openvla-oft @ bc339d9
   (the fork OFT pins: 4.40.1 plus bidirectional attention in that one file).

What is set around the reference code, each needed to run it here and noted where it happens:
CPU (``DEVICE``); the VLA built with ``torch_dtype=float32`` and ``get_vla_action``'s input cast to
float32 instead of its hard-coded bf16 (the fp32 comparison; the heads stay exactly as
``get_action_head`` / ``get_proprio_projector`` build them: bf16 modules, loaded, then cast to fp32
before use, as vla_gym runs them in the compute dtype); ``timm.create_model`` gets the tiny ViT sizes
of the checkpoint's ``vla_gym_timm_overrides`` (the release ids name ViT-L / So400m); the Llama-2 id
29871 of the empty piece, hard-coded in ``predict_action``, is the tiny vocabulary's id of the same piece;
the ``prismatic`` package ``__init__`` files are skipped (they import the training stack) and
``openvla_utils``' functions are compiled out of the file with ``ast`` (its module imports the training
data pipeline).

Usage::

    python3.11 -m venv /tmp/oftref && /tmp/oftref/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/oftref/bin/pip install transformers==4.40.1 tokenizers==0.19.1 timm==0.9.10 tensorflow-cpu diffusers \\
        sentencepiece accelerate safetensors einops
    git clone https://github.com/moojink/openvla-oft /tmp/oft_src                      # @ 213c5ff
    git clone https://github.com/moojink/transformers-openvla-oft /tmp/tf_fork          # @ bc339d9
    cp /tmp/tf_fork/src/transformers/models/llama/modeling_llama.py \\
        /tmp/oftref/lib/python3.11/site-packages/transformers/models/llama/modeling_llama.py
    .venv/bin/python tests/policies/data/oft_e2e/make_fixture.py checkpoint
    /tmp/oftref/bin/python tests/policies/data/oft_e2e/make_fixture.py reference /tmp/oft_src
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent
CKPT = OUT / "checkpoint"
UNNORM_KEY = "libero_spatial_no_noops"
CASES = ["put the black bowl on the plate", "open the top drawer of the cabinet"]


def write_checkpoint() -> None:
    """Step 1: the tiny OFT checkpoint (release dtypes) into ``checkpoint/``."""
    from vla_gym.policies.tiny_checkpoints import make_all

    with tempfile.TemporaryDirectory() as tmp:
        dirs = make_all(Path(tmp), seed=0, families=("openvla",))
        shutil.rmtree(CKPT, ignore_errors=True)
        shutil.copytree(dirs["openvla-oft"], CKPT, ignore=shutil.ignore_patterns("lora_adapter"))
    print("checkpoint written:", sorted(p.name for p in CKPT.iterdir()))


def extract(file: Path, names: list[str], namespace: dict) -> dict:
    """Compile the named top-level functions of ``file`` into ``namespace`` (as written)."""
    tree = ast.parse(file.read_text())
    found = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names}
    assert set(found) == set(names), set(names) - set(found)
    exec(compile(ast.Module(body=[found[n] for n in names], type_ignores=[]), str(file), "exec"), namespace)
    return {n: namespace[n] for n in names}


def stub_package(name: str, path: Path) -> None:
    """A package whose submodules import from ``path`` without running its ``__init__``."""
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]
    sys.modules[name] = mod


def run_reference(src: Path) -> None:
    """Step 2: openvla-oft's eval path on the checkpoint; writes reference.npz."""
    import timm
    import torch
    import triton  # noqa: F401  (loaded before TensorFlow: the other order segfaults in one process)
    import tensorflow as tf
    from PIL import Image
    from transformers import AutoTokenizer

    sys.path.insert(0, str(src))
    for pkg in ("prismatic", "prismatic.extern", "prismatic.extern.hf", "prismatic.models", "prismatic.training",
                "prismatic.vla", "experiments", "experiments.robot"):
        stub_package(pkg, src / pkg.replace(".", "/"))
    cfg_json = json.loads((CKPT / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(CKPT))
    empty_id = tokenizer.convert_tokens_to_ids("\u2581")
    # the Llama-2 id of the empty piece, hard-coded in predict_action, is the tiny vocabulary's id of it
    source = (src / "prismatic/extern/hf/modeling_prismatic.py").read_text()
    assert source.count("29871") == 2
    modeling = types.ModuleType("prismatic.extern.hf.modeling_prismatic")
    modeling.__file__ = str(src / "prismatic/extern/hf/modeling_prismatic.py")
    modeling.__package__ = "prismatic.extern.hf"
    sys.modules[modeling.__name__] = modeling
    exec(compile(source.replace("29871", str(empty_id)), modeling.__file__, "exec"), modeling.__dict__)
    from prismatic.extern.hf.processing_prismatic import PrismaticImageProcessor, PrismaticProcessor
    from prismatic.models.action_heads import DiffusionActionHead, L1RegressionActionHead
    from prismatic.models.projectors import ProprioProjector
    from prismatic.vla import constants

    sizes = dict(zip(cfg_json["timm_model_ids"], cfg_json["vla_gym_timm_overrides"]))
    create_model = timm.create_model
    timm.create_model = lambda model_id, **kw: create_model(model_id, **kw, **sizes[model_id])  # tiny ViTs

    vla = modeling.OpenVLAForActionPrediction.from_pretrained(str(CKPT), torch_dtype=torch.float32,
                                                              low_cpu_mem_usage=True).eval()
    assert all(p.dtype == torch.float32 for p in vla.parameters())
    processor = PrismaticProcessor(image_processor=PrismaticImageProcessor.from_pretrained(str(CKPT)),
                                   tokenizer=tokenizer)

    class Fp32Torch(types.ModuleType):  # get_vla_action casts its inputs to a hard-coded bf16
        def __getattr__(self, name):
            return torch.float32 if name == "bfloat16" else getattr(torch, name)

    utils_file = src / "experiments/robot/openvla_utils.py"
    ns = {"torch": torch, "np": np, "tf": tf, "Image": Image, "os": __import__("os"), "json": json,
          "DEVICE": torch.device("cpu"), "OPENVLA_IMAGE_SIZE": 224, "ACTION_DIM": constants.ACTION_DIM,
          "ACTION_PROPRIO_NORMALIZATION_TYPE": constants.ACTION_PROPRIO_NORMALIZATION_TYPE,
          "NormalizationType": constants.NormalizationType, "L1RegressionActionHead": L1RegressionActionHead,
          "DiffusionActionHead": DiffusionActionHead, "ProprioProjector": ProprioProjector,
          **{n: getattr(__import__("typing"), n) for n in ("Any", "Dict", "List", "Optional", "Tuple", "Union")}}
    fns = extract(utils_file, ["model_is_on_hf_hub", "find_checkpoint_file", "load_component_state_dict",
                               "_load_dataset_stats", "get_proprio_projector", "get_action_head",
                               "resize_image_for_policy", "crop_and_resize", "center_crop_image",
                               "check_image_format", "normalize_proprio", "prepare_images_for_vla"], ns)
    ns_fp32 = {**ns, "torch": Fp32Torch("torch")}
    get_vla_action = extract(utils_file, ["get_vla_action"], ns_fp32)["get_vla_action"]
    for name in ("prepare_images_for_vla", "normalize_proprio"):
        ns_fp32[name] = fns[name]
    libero = extract(src / "experiments/robot/libero/libero_utils.py", ["get_libero_image", "get_libero_wrist_image"],
                     {})
    robot = extract(src / "experiments/robot/robot_utils.py", ["normalize_gripper_action", "invert_gripper_action"],
                    {"np": np})

    cfg = types.SimpleNamespace(pretrained_checkpoint=str(CKPT), use_l1_regression=True, use_diffusion=False,
                                use_proprio=True, num_images_in_input=2, center_crop=True, unnorm_key=UNNORM_KEY,
                                use_film=False)
    fns["_load_dataset_stats"](vla, str(CKPT))
    vla.vision_backbone.set_num_images_in_input(cfg.num_images_in_input)
    llm_dim = vla.llm_dim
    action_head = fns["get_action_head"](cfg, llm_dim)
    proprio_projector = fns["get_proprio_projector"](cfg, llm_dim, proprio_dim=8)
    assert {p.dtype for p in action_head.parameters()} == {p.dtype for p in proprio_projector.parameters()} \
        == {torch.bfloat16}  # as the eval builds them
    action_head.float()  # the compute dtype of this fp32 run (the rounding above is the eval's)
    proprio_projector.float()

    seen: dict[str, np.ndarray] = {}  # the proprio token, read by a hook (the computation is untouched)
    proprio_projector.register_forward_hook(lambda mod, args, out: seen.update(token=out.float().numpy()))
    rng = np.random.default_rng(11)
    stats = vla.norm_stats[UNNORM_KEY]["proprio"]
    out: dict[str, np.ndarray] = {}
    for i, task in enumerate(CASES):
        # raw frames as LIBERO renders them (OpenGL, upside down); vla_gym's env emits raw[::-1]
        raw = {"agentview_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
               "robot0_eye_in_hand_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)}
        lo, hi = np.array(stats["q01"]), np.array(stats["q99"])
        state = lo + (hi - lo) * rng.uniform(-0.1, 1.1, size=8)  # a few entries outside [q01, q99] (clipped)
        # run_libero_eval.prepare_observation
        obs = {"full_image": fns["resize_image_for_policy"](libero["get_libero_image"](raw), 224),
               "wrist_image": fns["resize_image_for_policy"](libero["get_libero_wrist_image"](raw), 224),
               "state": state.copy()}
        actions = get_vla_action(cfg, vla, processor, obs, task, action_head=action_head,
                                 proprio_projector=proprio_projector, use_film=False)
        env = np.stack([robot["invert_gripper_action"](robot["normalize_gripper_action"](a.copy(), binarize=True))
                        for a in actions])
        out[f"raw_agentview_{i}"], out[f"raw_wrist_{i}"] = raw["agentview_image"], raw["robot0_eye_in_hand_image"]
        out[f"state_{i}"] = state
        out[f"instruction_{i}"] = np.array(task)
        out[f"raw_actions_{i}"] = np.stack(actions)
        out[f"proprio_token_{i}"] = seen.pop("token")
        out[f"actions_{i}"] = env
    np.savez_compressed(OUT / "reference.npz", **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    if sys.argv[1:2] == ["checkpoint"]:
        write_checkpoint()
    elif sys.argv[1:2] == ["reference"] and len(sys.argv) == 3:
        run_reference(Path(sys.argv[2]))
    else:
        raise SystemExit("usage: make_fixture.py checkpoint | reference OPENVLA_OFT_SRC")
