"""Measure vla_gym's pi0 / pi0.5 options against the references' own outputs (the e2e fixtures).

For each layout's end-to-end fixture (``pi0_{openpi,lerobot}_e2e_reference.npz``, made by openpi / LeRobot
themselves), runs ``Pi0Policy.from_pretrained`` + ``act(noise=)`` with each option and prints the max
abs difference of the env actions from the reference's fp32 and reference-precision chunks, plus the
per-frame time of the two image pipelines. Run from the repo root::

    .venv/bin/python tests/policies/data/pi0_measure_options.py
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from vla_gym.envs.contract import upright
from vla_gym.policies.pi0 import Pi0Policy
from vla_gym.policies.pi0.images import lerobot_image, openpi_image
from vla_gym.policies.pi0.make_tiny import write_tiny_pi0

HERE = Path(__file__).parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chunks(policy: Pi0Policy, script, ref) -> list[np.ndarray]:
    out = []
    for i in range(len(script.SIZES)):
        agent, wrist = script.frames(i)
        obs = {"images": {"agentview": upright(agent), "wrist": upright(wrist)},
               "instruction": str(ref[f"task_{i}"]), "state": ref[f"state_{i}"]}
        noise = script.noise(int(ref["seeds"][i]), policy.chunk_size)[None]
        out.append(policy.act([obs], noise=noise).actions[0])
    return out


def report(label: str, ours: list[np.ndarray], ref, key: str, sizes) -> None:
    diffs = [float(np.abs(o - ref[f"{key}_{i}"]).max()) for i, o in enumerate(ours)]
    cells = ", ".join(f"{h}x{w}: {d:.1e}" for (h, w), d in zip(sizes, diffs, strict=True))
    print(f"| {label} | {key} | {cells} |")


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = {("openpi", v): write_tiny_pi0(root / f"openpi-{v}", "openpi", v) for v in ("pi0", "pi05")}
        dirs["lerobot", "pi0"] = write_tiny_pi0(root / "lerobot-pi0", "lerobot", "pi0")
        dirs["lerobot", "pi05"] = write_tiny_pi0(root / "lerobot-pi05", "lerobot", "pi05", dtype="bfloat16")
        print("| vla_gym options | vs reference | max abs diff of env actions per frame size |")
        print("|---|---|---|")
        for layout in ("openpi", "lerobot"):
            script = _script(f"make_pi0_{layout}_e2e_fixture")
            ref = np.load(HERE / f"pi0_{layout}_e2e_reference.npz")
            for variant in ("pi0", "pi05"):
                ckpt = dirs[layout, variant]
                ref_bf16 = f"{variant}_bf16" if f"{variant}_bf16_0" in ref.files else None
                options = [("fp32", {"precision": "fp32"}), ("default precision", {})]
                other = "openpi" if layout == "lerobot" else "lerobot"
                options.append((f"fp32, image_pipeline={other}", {"precision": "fp32", "image_pipeline": other}))
                for label, kwargs in options:
                    policy = Pi0Policy.from_pretrained(ckpt, device="cpu", **kwargs)
                    ours = chunks(policy, script, ref)
                    name = f"{layout} {variant}: {label} ({policy.precision})"
                    report(name, ours, ref, f"{variant}_fp32", script.SIZES)
                    if ref_bf16 is not None:
                        report(name, ours, ref, ref_bf16, script.SIZES)
    frame = (np.random.default_rng(0).random((360, 360, 3)) * 255).astype(np.uint8)
    cpu = torch.device("cpu")
    for size in (360, 256):
        f = np.ascontiguousarray(frame[:size, :size])
        for name, fn in (("openpi (PIL)", lambda f=f: openpi_image(f)), ("lerobot (torch)", lambda f=f: lerobot_image(f, cpu))):
            fn()
            t0 = time.perf_counter()
            for _ in range(50):
                fn()
            print(f"image pipeline {name} {size}x{size} -> 224: {(time.perf_counter() - t0) / 50 * 1e3:.2f} ms/frame")


if __name__ == "__main__":
    main()
