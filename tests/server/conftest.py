"""Tiny torch policies shared by the server tests (written once per session, CPU, fp32)."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture(scope="session")
def tiny_oft(tmp_path_factory):
    """The tiny OpenVLA-OFT policy (only the base + OFT checkpoints are written), warmed up."""
    pytest.importorskip("torch")
    from vla_gym.policies.openvla.make_tiny import norm_stats, write_hf_checkpoint
    from vla_gym.policies.openvla_oft import OpenVLAOFTPolicy
    from vla_gym.policies.openvla_oft.make_tiny import write_oft_checkpoint
    from vla_gym.policies.testing import observation

    out = tmp_path_factory.mktemp("tiny_oft")
    state = write_hf_checkpoint(out / "openvla", norm_stats("libero_spatial_no_noops", with_proprio=False), 0)
    write_oft_checkpoint(out / "openvla-oft", base_state=state, seed=1)
    policy = OpenVLAOFTPolicy.from_pretrained(out / "openvla-oft", device="cpu")
    policy.act([observation(256, wrist=True)])  # warm-up (JIT of the image kernels)
    return policy


@pytest.fixture(scope="session")
def tiny_pi0(tmp_path_factory):
    """The tiny pi0 (openpi layout) policy, fp32 on the CPU."""
    pytest.importorskip("torch")
    from vla_gym.policies.pi0 import Pi0Policy
    from vla_gym.policies.pi0.make_tiny import write_tiny_pi0

    ckpt = write_tiny_pi0(tmp_path_factory.mktemp("tiny_pi0") / "pi0", "openpi", "pi0")
    with warnings.catch_warnings():  # "weights do not match Gemma variant": expected of a tiny checkpoint
        warnings.simplefilter("ignore", UserWarning)
        return Pi0Policy.from_pretrained(ckpt, device="cpu", precision="fp32")
