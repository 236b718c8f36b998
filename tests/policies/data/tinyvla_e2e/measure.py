"""Largest |vla_gym env action - the original's (fp32)| on this fixture, per precision option.

``.venv/bin/python tests/policies/data/tinyvla_e2e/measure.py`` (numbers in docs/fidelity-tinyvla-oft.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent
OPTIONS = {"precision=reference (default)": {}, "precision=fp32": {"precision": "fp32"},
           "quantization=bf16": {"quantization": "bf16"},
           "quantization=bf16, precision=fp32": {"quantization": "bf16", "precision": "fp32"},
           "quantization=fp16": {"quantization": "fp16"},
           "quantization=fp16, precision=fp32": {"quantization": "fp16", "precision": "fp32"}}


def main() -> None:
    from vla_gym.policies.tinyvla import TinyVLAPolicy

    ref = dict(np.load(DATA / "reference.npz"))
    cases = sorted(int(k.split("_")[1]) for k in ref if k.startswith("actions_"))
    for label, kw in OPTIONS.items():
        policy = TinyVLAPolicy.from_pretrained(DATA / "pythia_lora_run" / "checkpoint-8", model_base=DATA / "base",
                                               device="cpu", **kw)
        diffs = []
        for i in cases:
            obs = {"images": {"agentview": ref[f"agentview_{i}"], "wrist": ref[f"wrist_{i}"]},
                   "state": ref[f"state_{i}"], "instruction": str(ref[f"instruction_{i}"])}
            diffs.append(float(np.abs(policy.act([obs], noise=ref[f"noise_{i}"]).actions - ref[f"actions_{i}"]).max()))
        print(f"{label:36s} {max(diffs):.2g}")


if __name__ == "__main__":
    main()
