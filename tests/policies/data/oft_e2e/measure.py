"""Largest |vla_gym env action - openvla-oft's (fp32)| on this fixture, per precision.

``.venv/bin/python tests/policies/data/oft_e2e/measure.py`` (numbers in docs/fidelity-tinyvla-oft.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent
OPTIONS = {"quantization=fp32": {"quantization": "fp32"}, "stored dtype (bf16, the default)": {},
           "quantization=fp16": {"quantization": "fp16"}}


def main() -> None:
    from vla_gym.policies.openvla_oft import OpenVLAOFTPolicy

    ref = dict(np.load(DATA / "reference.npz"))
    cases = sorted(int(k.split("_")[1]) for k in ref if k.startswith("actions_"))
    for label, kw in OPTIONS.items():
        policy = OpenVLAOFTPolicy.from_pretrained(DATA / "checkpoint", device="cpu", **kw)
        diffs = []
        for i in cases:
            obs = {"images": {"agentview": ref[f"raw_agentview_{i}"][::-1], "wrist": ref[f"raw_wrist_{i}"][::-1]},
                   "state": ref[f"state_{i}"], "instruction": str(ref[f"instruction_{i}"])}
            diffs.append(float(np.abs(policy.act([obs]).actions[0] - ref[f"actions_{i}"]).max()))
        print(f"{label:36s} {max(diffs):.2g}")


if __name__ == "__main__":
    main()
