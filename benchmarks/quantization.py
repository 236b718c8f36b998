"""Weight bytes, act() latency and action drift of each quantization setting, side by side.

Usage::

    python benchmarks/quantization.py                          # tiny OpenVLA written on the fly
    python benchmarks/quantization.py --checkpoint DIR         # a real OpenVLA release dir
    python benchmarks/quantization.py --policy openvla_oft --checkpoint DIR
    python benchmarks/quantization.py --estimate-7b            # + analytic bytes of OpenVLA-7B

Every setting is loaded fresh through the same ``from_pretrained(quantization=...)`` path the
runner uses and measured in this one run; ratios are to ``bf16`` (the reference dtype).
"Max |d action|" is the largest difference from the bf16 policy's actions over the arm
dimensions (xyz + rotation), and "gripper agree" the share of identical gripper commands,
over ``--obs`` observations. Targets (issue 5): int8 <= 0.55x and int4 <= 0.30x bf16 bytes.
On a tiny checkpoint the embedding table and LayerNorms weigh relatively more, so the ratios
are higher than for the 7B model: use ``--estimate-7b`` for the full-size proportions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vla_gym.policies.tiny_checkpoints import make_all_in_subprocess
from vla_gym.policies.testing import observation_batch
from vla_gym.policy import act_one


def load(policy: str, checkpoint: Path, quantization: dict, device: str):
    """Load through the public factory, exactly as Hydra would."""
    if policy == "openvla":
        from vla_gym.policies.openvla import OpenVLAPolicy

        return OpenVLAPolicy.from_pretrained(checkpoint, device=device, quantization=quantization)
    from vla_gym.policies.openvla_oft import OpenVLAOFTPolicy

    return OpenVLAOFTPolicy.from_pretrained(checkpoint, device=device, quantization=quantization)


def estimate_7b() -> None:
    """Analytic weight bytes of the full OpenVLA-7B under each setting (model built on meta)."""
    import torch
    from vla_gym.policies.openvla.config import OpenVLAConfig
    from vla_gym.policies.openvla.loader import build_on_meta
    from vla_gym.policies.openvla.modeling import OpenVLAModel

    raw = {
        "model_type": "openvla",
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "pad_to_multiple_of": 64,
        "text_config": {"model_type": "llama", "pad_token_id": 32000, "vocab_size": 32064},
    }
    model = build_on_meta(lambda: OpenVLAModel(OpenVLAConfig.from_dict(raw)))
    lin_w = lin_rows = lin_groups = 0
    other = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            out_f, in_f = module.weight.shape
            lin_w += out_f * in_f
            lin_rows += out_f
            lin_groups += out_f * ((in_f + 127) // 128)
            if module.bias is not None:
                other += module.bias.numel()
    total = sum(p.numel() for p in model.parameters())
    other += (
        total
        - lin_w
        - sum(
            m.bias.numel()
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head") and m.bias is not None
        )
    )
    bf16 = 2 * total
    int8 = lin_w + 2 * lin_rows + 2 * other  # int8 data + one bf16 scale per row (quanto / bnb)
    int4 = lin_w // 2 + 4 * lin_groups + 2 * other  # packed nibbles + bf16 scale and shift per 128
    print(f"\nOpenVLA-7B estimate ({total / 1e9:.2f} B params, lm_head and embeddings kept bf16):")
    for name, b in (("bf16", bf16), ("fp16", bf16), ("int8", int8), ("int4", int4)):
        print(f"  {name:5s} {b / 2**30:7.2f} GiB  {b / bf16:5.3f}x bf16")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, measure every setting, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=["openvla", "openvla_oft"], default="openvla")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default: tiny checkpoint in a temp dir"
    )
    parser.add_argument("--settings", default="bf16,fp16,int8,int4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--obs", type=int, default=5, help="observations to compare actions on")
    parser.add_argument("--repeats", type=int, default=10, help="timed act() calls per setting")
    parser.add_argument("--estimate-7b", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.manual_seed(0)
    ckpt = args.checkpoint
    scratch = tempfile.TemporaryDirectory(prefix="vla_gym_tiny_")  # removed at exit
    if ckpt is None:
        dirs = make_all_in_subprocess(Path(scratch.name))
        ckpt = dirs["openvla" if args.policy == "openvla" else "openvla-oft"]
    settings = ["bf16"] + [s for s in args.settings.split(",") if s and s != "bf16"]
    obs = observation_batch(args.obs, 256, wrist=args.policy == "openvla_oft")
    rows, ref_actions = [], None
    for name in settings:
        pol = load(args.policy, ckpt, {"name": name}, args.device)
        actions = [act_one(pol, o) for o in obs]  # also warms up
        times = []
        for i in range(args.repeats):
            t = time.perf_counter()
            act_one(pol, obs[i % len(obs)])
            times.append(1e3 * (time.perf_counter() - t))
        info = pol.info()
        if ref_actions is None:
            ref_actions = actions
        arm = max(
            float(np.abs(a[:, :-1] - r[:, :-1]).max()) for a, r in zip(actions, ref_actions, strict=True)
        )
        grip = float(
            np.mean([np.mean(a[:, -1] == r[:, -1]) for a, r in zip(actions, ref_actions, strict=True)])
        )
        rows.append((name, info.weight_bytes, info.dtype, statistics.median(times), arm, grip))
        pol.close()
    base_bytes, base_ms = rows[0][1], rows[0][3]
    print(
        f"policy={args.policy} checkpoint={ckpt} device={args.device} torch={torch.__version__} "
        f"threads={torch.get_num_threads()}"
    )
    print(
        f"{'setting':8s} {'weight bytes':>14s} {'x bf16':>7s} {'act ms':>9s} {'x bf16':>7s} "
        f"{'max |d action|':>15s} {'gripper agree':>14s}  dtype"
    )
    for name, nbytes, dtype, ms, arm, grip in rows:
        print(
            f"{name:8s} {nbytes:14,d} {nbytes / base_bytes:7.3f} {ms:9.1f} {ms / base_ms:7.2f} "
            f"{arm:15.4f} {grip:14.2f}  {dtype}"
        )
    if args.estimate_7b:
        estimate_7b()


if __name__ == "__main__":
    main()
