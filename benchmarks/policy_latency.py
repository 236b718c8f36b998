"""act() latency of every torch policy family over a batch axis, split into stages, and weight bytes.

Usage::

    python benchmarks/policy_latency.py                         # all tiny policies, B = 1, 2, 4, 8
    python benchmarks/policy_latency.py --policy tinyvla,pi05 --batch-sizes 1,4
    python benchmarks/policy_latency.py --policy openvla --checkpoint DIR --batch-sizes 1,8
    python benchmarks/policy_latency.py --policy tinyvla --checkpoint RUN/checkpoint-N --model-base BASE
    python benchmarks/policy_latency.py --stages --pixels       # + OpenVLA image path, LIBERO pixels

Families (``benchmarks/families.py``): openvla, openvla_oft, tinyvla, pi0, pi05, each loaded through
its public ``from_pretrained`` from its own tiny checkpoint (written by its ``make_tiny``) unless
``--checkpoint`` is given. Tables, all measured in this one run:

1. Per (policy, B): calls/s, ms per call, ms per sample, the throughput ratio
   ``samples/s(B) / (B x samples/s(1))`` (the GPU target is >= 0.8 at B = 8 -- on a 2-core CPU the
   model is compute bound, so expect less) and the runner's stage split per sample
   (``ActionChunk.info["timing_ms"]``: preprocess / model / postprocess). "Adapter overhead" is
   everything outside the network (image path, tokenisation, padding, decoding) per sample; the
   API issue's budget is 5 ms. Every batch holds different images, states and instructions of
   different token lengths (:func:`vla_gym.policies.testing.observation_batch`).
2. Inside ``model`` for the sampling families: TinyVLA vision / LLM / diffusion and pi0 vision /
   prefix (KV cache, once per call) / denoise, per sample, and the denoising loop per step.
3. Weight bytes per quantization setting (``--weights``), as ``results.json`` records them.

``--stages`` breaks the OpenVLA image path down (orientation, JPEG, lanczos, crop, normalisation)
per camera; ``--pixels`` renders the same LIBERO init state at 256 (reference: then lanczos to 224)
and at 224 (fast path) and prints how far apart the model inputs are.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import families
import numpy as np

from vla_gym.policies.testing import observation_batch


def timeit(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, min) wall time of ``fn`` in ms; min is the contention-free estimate on a shared CPU."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times), min(times)


def _numpy_image(frame: np.ndarray) -> np.ndarray:
    """The image path with the numpy implementations (what reference_image ran before numba)."""
    from vla_gym.policies.openvla import images
    from vla_gym.policies.toolkit import tf_image

    img = tf_image.tf_lanczos3_resize_numpy(tf_image.jpeg_roundtrip(images.reference_orientation(frame)), 224)
    return tf_image.tf_center_crop_resize_numpy(img)


def stage_table(pol, frame: np.ndarray, repeats: int) -> None:
    """Per-stage cost of the reference image path for one camera, and of the prompt."""
    from vla_gym.policies.openvla import images
    from vla_gym.policies.toolkit import tf_image

    oriented = images.reference_orientation(frame)
    jpeg = tf_image.jpeg_roundtrip(oriented)
    resized = tf_image.tf_lanczos3_resize(jpeg, 224)
    cropped = tf_image.tf_center_crop_resize(resized)
    stages = [
        ("orientation (mirror)", lambda: images.reference_orientation(frame)),
        ("jpeg round trip", lambda: tf_image.jpeg_roundtrip(oriented)),
        (f"lanczos3 {frame.shape[0]}->224", lambda: tf_image.tf_lanczos3_resize(jpeg, 224)),
        ("center crop 0.9", lambda: tf_image.tf_center_crop_resize(resized)),
        ("normalise 2 towers", lambda: pol.pixels(cropped)),
        ("tokenise prompt", lambda: pol.tokenizer.encode_prompt("put the black bowl on the plate")),
    ]
    # reference_image fuses these (PIL mirrors while encoding, the crop reads the resize's
    # transposed output): the first four rows overstate the real path, timed here as a whole.
    fused = timeit(lambda: images.reference_image(frame), repeats)[0]
    print(f"    {'reference_image (fused)':24s} {fused:7.2f} ms")
    print(f"    {'numpy reference (old)':24s} {timeit(lambda: _numpy_image(frame), repeats)[0]:7.2f} ms")
    total_med = total_min = 0.0
    for name, fn in stages:
        med, low = timeit(fn, repeats)
        total_med, total_min = total_med + med, total_min + low
        print(f"    {name:24s} {med:7.2f} / {low:7.2f} ms")
    print(f"    {'sum':24s} {total_med:7.2f} / {total_min:7.2f} ms")


def measure(pol, batch_size: int, repeats: int, wrist: bool) -> dict[str, float]:
    """Median (and ``<stage>_min``: minimum) ms per call of ``act`` on one batch: wall and each
    stage of ``info["timing_ms"]``. The minimum is the contention-free estimate on a shared CPU."""
    obs = observation_batch(batch_size, size=pol.inputs.image_size, wrist=wrist)
    first = pol.act(obs)  # warm-up (numba kernels, allocator)
    rows: dict[str, list[float]] = {"wall": [], **{k: [] for k in first.info.get("timing_ms", {})}}
    for _ in range(repeats):
        t = time.perf_counter()
        result = pol.act(obs)
        rows["wall"].append(1e3 * (time.perf_counter() - t))
        for k, v in result.info.get("timing_ms", {}).items():
            rows.setdefault(k, []).append(v)
    out = {k: statistics.median(v) for k, v in rows.items() if v}
    out["wall_all"] = rows["wall"]  # type: ignore[assignment]  # every call, for --profile-out
    out.update({f"{k}_min": min(v) for k, v in rows.items() if v})
    out["denoise_steps"] = float(first.info.get("num_denoise_steps", 0))
    return out


def write_profile(path: Path, hardware: str, results: dict[str, dict[int, dict[str, Any]]],
                  sources: dict[str, tuple[Path, dict]], quantization: str) -> None:
    """One row per (policy, B): mean and p95 of the measured act() calls (:mod:`vla_gym.latency_sources`)."""
    from vla_gym.latency_sources import measured_entry, save_profile

    stamp = time.strftime("%Y-%m-%d")
    entries = [measured_entry(policy, hardware, b, r["wall_all"],
                              f"benchmarks/policy_latency.py, {stamp}, checkpoint {sources[policy][0]}, "
                              f"quantization {quantization}")
               for policy, by_b in results.items() for b, r in by_b.items()]
    save_profile(entries, path, about=f"act() wall times measured on {hardware}")
    print(f"latency profile written: {path} ({len(entries)} rows)")


def batch_table(results: dict[str, dict[int, dict[str, float]]], quantization: str) -> None:
    """The side-by-side table: one row per (policy, B)."""
    print(f"\nact() on CPU ({quantization}); median / min over the repeats; per-sample columns = per call / B")
    header = (f"{'policy':12s} {'B':>2s} {'calls/s':>8s} {'ms/call':>17s} {'ms/sample':>17s} {'x(B*B1)':>7s} "
              f"{'prep/sample':>11s} {'model/sample':>12s} {'post/sample':>11s} {'overhead/sample':>15s}")
    print(header)
    for policy, by_b in results.items():
        b1 = min(by_b)
        base = {k: b1 * 1e3 / by_b[b1][k] for k in ("wall", "wall_min")}  # samples/s at the smallest B
        for b, r in by_b.items():
            ratio = "/".join(f"{b * 1e3 / r[k] / base[k]:.2f}" for k in ("wall", "wall_min"))
            overhead = (r.get("preprocess", 0) + r.get("postprocess", 0)) / b
            overhead_min = (r.get("preprocess_min", 0) + r.get("postprocess_min", 0)) / b
            print(f"{policy:12s} {b:2d} {1e3 / r['wall']:8.2f} {r['wall']:8.1f}/{r['wall_min']:8.1f} "
                  f"{r['wall'] / b:8.1f}/{r['wall_min'] / b:8.1f} {ratio:>9s} {r.get('preprocess', 0) / b:11.2f} "
                  f"{r.get('model', 0) / b:12.1f} {r.get('postprocess', 0) / b:11.2f} "
                  f"{overhead:7.2f}/{overhead_min:7.2f}")
    print("overhead = preprocess + postprocess (budget 5 ms per sample); "
          "x(B*B1) = samples/s(B) / samples/s(B=1), median/min")


def model_stage_table(results: dict[str, dict[int, dict[str, float]]]) -> None:
    """Inside ``model``: the families' own stages (TinyVLA vision / llm / diffusion, pi0 vision /
    prefix / denoise) per sample, and the denoising loop per step."""
    inner = {"vision", "llm", "prefix", "diffusion", "denoise"}
    rows = [(p, b, r) for p, by_b in results.items() for b, r in by_b.items() if inner & set(r)]
    if not rows:
        return
    print("\nmodel stages per sample, median ms (denoise/step = diffusion or denoise loop / steps / B)")
    print(f"{'policy':12s} {'B':>2s} {'vision':>8s} {'llm/prefix':>10s} {'denoise':>8s} {'steps':>5s} "
          f"{'denoise/step':>12s}")
    for policy, b, r in rows:
        lm = r.get("llm", r.get("prefix", 0.0))
        loop = r.get("diffusion", r.get("denoise", 0.0))
        steps = int(r.get("denoise_steps", 0)) or 1
        print(f"{policy:12s} {b:2d} {r.get('vision', 0.0) / b:8.2f} {lm / b:10.2f} {loop / b:8.2f} {steps:5d} "
              f"{loop / steps / b:12.3f}")


def weights_table(family: str, checkpoint: Path, extra: dict, settings: list[str]) -> None:
    """Weight bytes of the loaded policy under each quantization setting (``PolicyInfo.weight_bytes``)."""
    print(f"\n{family}: weight bytes per quantization (what results.json records)")
    base = None
    for name in settings:
        pol = families.load(family, checkpoint, name, **extra)
        info = pol.info()
        base = base or info.weight_bytes
        print(f"  {name:5s} {info.weight_bytes:14,d} B  {info.weight_bytes / base:6.3f}x {settings[0]}  {info.dtype}")
        pol.close()


def pixels(task: int, steps: int) -> None:
    """Fast path (render 224) vs reference path (render 256 + lanczos) on the same LIBERO state."""
    import gymnasium as gym
    from vla_gym.policies.openvla import images

    import vla_gym  # noqa: F401  (registers the env ids)

    frames, render_ms = {}, {}
    for size in (256, 224):
        env = gym.make("vla_gym/LiberoSpatial-v1", task=task, cameras=("agentview",), image_size=size)
        obs, _ = env.reset(seed=0)
        t = time.perf_counter()
        for _ in range(steps):
            obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32))
        render_ms[size] = 1e3 * (time.perf_counter() - t) / steps
        frames[size] = obs["images"]["agentview"]
        env.close()
    for crop in (False, True):
        ref = images.reference_image(frames[256], 224, center_crop=crop).astype(int)
        fast = images.reference_image(frames[224], 224, center_crop=crop).astype(int)
        d = np.abs(ref - fast)
        print(
            f"\nLIBERO-spatial task {task}, after {steps} no-op steps, center_crop={crop}: model input "
            f"fast (224) vs reference (256->224): mean |d| {d.mean():.2f}, p99 {np.percentile(d, 99):.0f}, "
            f"max {d.max()}, pixels differing by >8 levels {100 * (d > 8).mean():.1f} %"
        )
    print(f"env step incl. render: {render_ms[256]:.0f} ms at 256, {render_ms[224]:.0f} ms at 224")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="openvla,openvla_oft,tinyvla,pi0,pi05",
                        help=f"comma-separated, of {sorted(families.FAMILIES)}")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default: tiny checkpoints in a temp dir (one --policy)"
    )
    parser.add_argument("--model-base", type=Path, default=None, help="TinyVLA LoRA checkpoints: the base VLM dir")
    parser.add_argument("--quantization", default="none")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--weights", default="none,bf16,fp16,int8,int4",
                        help="quantization settings for the weight-bytes tables ('' = skip)")
    parser.add_argument("--stages", action="store_true", help="also break the OpenVLA image path down per camera")
    parser.add_argument(
        "--pixels", action="store_true", help="also measure fast vs reference pixels in LIBERO"
    )
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profile-out", type=Path, default=None,
                        help="also write the act() times as a latency profile (execution.latency.source=profile)")
    parser.add_argument("--hardware", default=None, help="the profile rows' hardware name (with --profile-out)")
    args = parser.parse_args(argv)
    if args.profile_out is not None and not args.hardware:
        parser.error("--profile-out needs --hardware (the name the rows are looked up by, e.g. rtx4090)")

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    policies = [p for p in args.policy.split(",") if p]
    unknown = sorted(set(policies) - set(families.FAMILIES))
    if unknown or (args.checkpoint is not None and len(policies) != 1):
        parser.error(f"unknown --policy {unknown}" if unknown else "--checkpoint needs exactly one --policy")
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    scratch = tempfile.TemporaryDirectory(prefix="vla_gym_tiny_")  # removed at exit
    results: dict[str, dict[int, dict[str, float]]] = {}
    loaded, sources = {}, {}
    for policy in policies:
        if args.checkpoint is None:
            ckpt, extra = families.tiny_checkpoint(policy, Path(scratch.name))
        else:
            ckpt, extra = args.checkpoint, ({"model_base": args.model_base} if args.model_base else {})
        sources[policy] = (ckpt, extra)
        pol = loaded[policy] = families.load(policy, ckpt, args.quantization, **extra)
        wrist = families.FAMILIES[policy].wrist
        results[policy] = {b: measure(pol, b, args.repeats, wrist) for b in sizes}
    if args.profile_out is not None:
        write_profile(args.profile_out, args.hardware, results, sources, args.quantization)
    batch_table(results, args.quantization)
    model_stage_table(results)
    settings = [s for s in args.weights.split(",") if s]
    if settings:
        for policy in policies:
            weights_table(policy, *sources[policy], settings)
    if args.stages:
        for policy, pol in loaded.items():
            if policy.startswith("openvla"):
                print(f"\n{policy}: image path per camera, median / min:")
                frame = observation_batch(1, size=pol.inputs.image_size)[0]["images"]["agentview"]
                stage_table(pol, frame, args.repeats)
    if args.pixels:
        pixels(args.task, args.steps)


if __name__ == "__main__":
    main()
