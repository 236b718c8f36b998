"""Weight bytes, act() latency and action drift of each quantization setting, side by side.

Usage::

    python benchmarks/quantization.py                          # tiny OpenVLA written on the fly
    python benchmarks/quantization.py --policy tinyvla         # tiny TinyVLA (fp32 reference)
    python benchmarks/quantization.py --policy pi05 --settings fp32,bf16,fp16,int8
    python benchmarks/quantization.py --checkpoint DIR         # a real OpenVLA release dir
    python benchmarks/quantization.py --estimate-7b            # + analytic bytes of OpenVLA-7B
    python benchmarks/quantization.py --estimate-pi0           # + analytic bytes of the 3.3 B pi0 / pi0.5

Every setting is loaded fresh through the same ``from_pretrained(quantization=...)`` path the
runner uses (``benchmarks/families.py``) and measured in this one run; ratios are to the family's
reference setting (OpenVLA/OFT ``bf16``, their reference dtype; TinyVLA and pi0/pi0.5 ``fp32``,
whose math their issues state as the reference). "Max |d action|" is the largest difference from
the reference policy's actions over the arm dimensions (xyz + rotation), and "gripper agree" the
share of identical gripper commands, over ``--obs`` observations; sampling policies are reseeded
before every call, so each setting starts from the same noise. Targets (issue 5): int8 <= 0.55x and
int4 <= 0.30x bf16 bytes. On a tiny checkpoint the embedding table and norms weigh relatively
more, so the ratios are higher than for the full models: use the ``--estimate-*`` options for
full-size proportions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import families
import numpy as np

from vla_gym.policies.testing import observation_batch
from vla_gym.policy import act_one


def estimate_7b() -> None:
    """Analytic weight bytes of the full OpenVLA-7B under each setting (model built on meta)."""
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
    total, bf16, int8, int4 = analytic_bytes(model, skip=("lm_head",))
    print(f"\nOpenVLA-7B estimate ({total / 1e9:.2f} B params, lm_head and embeddings kept bf16):")
    for name, b in (("bf16", bf16), ("fp16", bf16), ("int8", int8), ("int4", int4)):
        print(f"  {name:5s} {b / 2**30:7.2f} GiB  {b / bf16:5.3f}x bf16")


def analytic_bytes(model, skip: tuple[str, ...], fp32_keep: tuple[str, ...] = ()) -> tuple[int, int, int, int]:
    """(params, bf16 bytes, int8 bytes, int4 bytes) of a model built on the meta device.

    Linear weights outside ``skip`` (dotted-name components) are quantized: int8 = one byte each +
    one bf16 scale per row (quanto / bitsandbytes); int4 = packed nibbles + bf16 scale and shift
    per group of 128. Everything else stays bf16, except parameters whose name contains an entry
    of ``fp32_keep`` (4 bytes: a family's fp32-kept norms and embeddings).
    """
    import torch

    def skipped(name: str) -> bool:
        return any(part in skip for part in name.split("."))

    quantized: dict[str, tuple[int, int]] = {
        f"{n}.weight": tuple(m.weight.shape) for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not skipped(n)
    }
    total = bf16 = int8 = int4 = 0
    for name, p in model.named_parameters():
        n = p.numel()
        total += n
        width = 4 if any(k in name for k in fp32_keep) else 2
        bf16 += width * n
        if name in quantized:
            out_f, in_f = quantized[name]
            int8 += n + 2 * out_f
            int4 += n // 2 + 4 * out_f * ((in_f + 127) // 128)
        else:
            int8 += width * n
            int4 += width * n
    return total, bf16, int8, int4


def estimate_pi0() -> None:
    """Analytic weight bytes of the real pi0 / pi0.5 (SigLIP So400m + Gemma 2B + Gemma 300M), on meta."""
    import torch

    from vla_gym.policies.pi0 import modeling
    from vla_gym.policies.pi0.policy import Pi0Policy

    for pi05 in (False, True):
        dims = modeling.Pi0Dims(vision=modeling.SO400M, paligemma=modeling.VARIANTS["gemma_2b"],
                                expert=modeling.VARIANTS["gemma_300m"], vocab_size=257_152, action_dim=32,
                                action_horizon=10 if pi05 else 50, pi05=pi05)
        with torch.device("meta"):
            model = modeling.Pi0Model(dims)
        skip = tuple(Pi0Policy.quantization_skip) + ("lm_head",)
        total, bf16, int8, int4 = analytic_bytes(model, skip=skip, fp32_keep=tuple(modeling.OPENPI_FP32_KEEP))
        name = "pi0.5" if pi05 else "pi0"
        print(f"\n{name} estimate ({total / 1e9:.3f} B params; openpi's fp32-kept norms/embeddings at 4 bytes, "
              f"unquantized: {', '.join(skip)}):")
        print(f"  fp32  {4 * total / 2**30:7.2f} GiB  {4 * total / bf16:5.3f}x bf16")
        for label, b in (("bf16", bf16), ("int8", int8), ("int4", int4)):
            print(f"  {label:5s} {b / 2**30:7.2f} GiB  {b / bf16:5.3f}x bf16")


def act_reseeded(pol, obs, stochastic: bool) -> np.ndarray:
    """One chunk; sampling policies start from the same noise in every setting (reset seed 0)."""
    if stochastic:
        pol.reset(env_ids=[0], seeds=[0])
    return act_one(pol, obs)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, measure every setting, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=sorted(families.FAMILIES), default="openvla")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default: tiny checkpoint in a temp dir"
    )
    parser.add_argument("--model-base", type=Path, default=None, help="TinyVLA LoRA checkpoints: the base VLM dir")
    parser.add_argument("--settings", default="bf16,fp16,int8,int4",
                        help="compared with the family's reference setting, which always runs first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--obs", type=int, default=5, help="observations to compare actions on")
    parser.add_argument("--repeats", type=int, default=10, help="timed act() calls per setting")
    parser.add_argument("--estimate-7b", action="store_true")
    parser.add_argument("--estimate-pi0", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.manual_seed(0)
    family = families.FAMILIES[args.policy]
    scratch = tempfile.TemporaryDirectory(prefix="vla_gym_tiny_")  # removed at exit
    if args.checkpoint is None:
        ckpt, extra = families.tiny_checkpoint(args.policy, Path(scratch.name))
    else:
        ckpt, extra = args.checkpoint, ({"model_base": args.model_base} if args.model_base else {})
    ref = family.reference_setting
    settings = [ref] + [s for s in args.settings.split(",") if s and s != ref]
    obs = observation_batch(args.obs, 256, wrist=family.wrist)
    rows, ref_actions = [], None
    for name in settings:
        pol = families.load(args.policy, ckpt, {"name": name}, args.device, **extra)
        actions = [act_reseeded(pol, o, family.stochastic) for o in obs]  # also warms up
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
        finite = all(np.isfinite(a).all() for a in actions)
        rows.append((name, info.weight_bytes, info.dtype, statistics.median(times), arm, grip, finite))
        pol.close()
    base_bytes, base_ms = rows[0][1], rows[0][3]
    print(
        f"policy={args.policy} checkpoint={ckpt} device={args.device} torch={torch.__version__} "
        f"threads={torch.get_num_threads()}"
    )
    print(
        f"{'setting':8s} {'weight bytes':>14s} {'x ' + ref:>7s} {'act ms':>9s} {'x ' + ref:>7s} "
        f"{'max |d action|':>15s} {'gripper agree':>14s} {'finite':>6s}  dtype"
    )
    for name, nbytes, dtype, ms, arm, grip, finite in rows:
        print(
            f"{name:8s} {nbytes:14,d} {nbytes / base_bytes:7.3f} {ms:9.1f} {ms / base_ms:7.2f} "
            f"{arm:15.4f} {grip:14.2f} {str(finite):>6s}  {dtype}"
        )
    if args.estimate_7b:
        estimate_7b()
    if args.estimate_pi0:
        estimate_pi0()


if __name__ == "__main__":
    main()
