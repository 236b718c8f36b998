"""TinyVLA end to end against the original's own builder and eval path (tests/policies/data/tinyvla_e2e/).

The fixture starts from files stored as the release stores them (bf16 base weights, fp32
``non_lora_trainables.bin`` with the UNet and projector, a peft adapter), feeds raw frames at and
off the processor's size (every resize runs), fixed noise, and compares the final env actions of
``TinyVLAPolicy.from_pretrained`` + ``act`` with the original's ``post_process``-ed chunk.
make_fixture.py there says how it was made and what was set around the original code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")

DATA = Path(__file__).parent / "data" / "tinyvla_e2e"
CASES = 3


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return dict(np.load(DATA / "reference.npz"))


def _load(**kw):
    from vla_gym.policies.tinyvla import TinyVLAPolicy

    return TinyVLAPolicy.from_pretrained(DATA / "pythia_lora_run" / "checkpoint-8", model_base=DATA / "base",
                                         device="cpu", **kw)


@pytest.fixture(scope="module")
def policy():
    return _load()


def _obs(ref, i: int) -> dict:
    return {"images": {"agentview": ref[f"agentview_{i}"], "wrist": ref[f"wrist_{i}"]},
            "state": ref[f"state_{i}"], "instruction": str(ref[f"instruction_{i}"])}


def test_stored_dtypes_are_the_releases():
    import torch
    from safetensors.torch import load_file

    base = load_file(str(DATA / "base" / "model.safetensors"))
    non_lora = torch.load(DATA / "pythia_lora_run" / "checkpoint-8" / "non_lora_trainables.bin", weights_only=True)
    assert {v.dtype for v in base.values()} == {torch.bfloat16}
    assert {v.dtype for v in non_lora.values()} == {torch.float32}
    assert {k.split(".")[2] for k in non_lora} == {"embed_out", "gpt_neox"}  # the UNet and the projector


@pytest.mark.parametrize("case", range(CASES))
def test_env_actions_equal_the_original_at_fp32(policy, ref, case):
    chunk = policy.act([_obs(ref, case)], noise=ref[f"noise_{case}"])
    np.testing.assert_allclose(chunk.actions, ref[f"actions_{case}"], rtol=0, atol=1e-5)


def test_model_is_fp32_with_fp32_rotary_buffers(policy):
    import torch

    assert {p.dtype for p in policy.model.parameters()} == {torch.float32}
    inv_freq = [b for n, b in policy.model.named_buffers() if n.endswith("inv_freq")]
    assert inv_freq and all(b.dtype == torch.float32 for b in inv_freq)
    assert policy.model.embed_out.diffusion_step_encoder[0].dtype == torch.bfloat16  # the original's hard-coded bf16


def test_noise_keyword_is_checked_and_leaves_the_generators_alone(policy, ref):
    obs = _obs(ref, 0)
    policy.reset()
    drawn = policy.act([obs]).actions
    policy.reset()
    policy.act([obs], noise=ref["noise_0"])
    np.testing.assert_array_equal(policy.act([obs]).actions, drawn)  # the given noise did not draw
    import torch

    as_tensor = policy.act([obs], noise=torch.from_numpy(ref["noise_0"])).actions
    np.testing.assert_array_equal(as_tensor, policy.act([obs], noise=ref["noise_0"]).actions)
    with pytest.raises(ValueError, match="floating"):
        policy.act([obs], noise=torch.zeros((1, 8, 7), dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        policy.act([obs], noise=np.zeros((1, 4, 7), np.float32))
    with pytest.raises(ValueError, match="finite"):
        policy.act([obs], noise=np.full((1, 8, 7), np.nan, np.float32))


def test_fp32_precision_option_stays_close_to_the_reference(ref):
    """precision="fp32" (fp32 step embedding): measured max |d| over the 3 cases in docs/fidelity-tinyvla-oft.md."""
    policy = _load(precision="fp32")
    diffs = [np.abs(policy.act([_obs(ref, i)], noise=ref[f"noise_{i}"]).actions - ref[f"actions_{i}"]).max()
             for i in range(CASES)]
    assert max(diffs) < 1e-2, diffs


def test_unknown_precision_is_one_clear_error():
    with pytest.raises(ValueError, match="precision"):
        _load(precision="fp64")
