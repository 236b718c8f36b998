"""Quantization group: casts, CPU weight-only int8/int4 (optimum-quanto) and clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vla_gym.quantization import (  # noqa: E402
    NAMES,
    QuantizationError,
    apply_quantization,
    describe_weights,
    linear_names,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "quantization"


class Tiny(torch.nn.Module):
    """Two linears, an embedding, a head to skip and a non-persistent float32 buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 256)
        self.body = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256))
        self.lm_head = torch.nn.Linear(256, 10, bias=False)
        self.register_buffer("inv_freq", torch.arange(4, dtype=torch.float32) / 3, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.body(self.embed(x)))


def test_yaml_files_cover_every_setting():
    from omegaconf import OmegaConf

    names = {OmegaConf.load(p).name for p in CONF.glob("*.yaml")}
    assert names == {"none", "fp16", "bf16", "int8", "int4"}
    assert set(names) <= set(NAMES)


@pytest.mark.parametrize(
    "name,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)]
)
def test_casts_change_weights_but_keep_derived_float32_buffers(name, dtype):
    m = Tiny()
    assert apply_quantization(m, {"name": name}) == name
    assert m.body[0].weight.dtype == dtype and m.embed.weight.dtype == dtype
    assert m.inv_freq.dtype == torch.float32  # rotary-style constants stay exact


def test_none_keeps_stored_dtype():
    m = Tiny().to(torch.bfloat16)
    apply_quantization(m, None)
    assert m.body[0].weight.dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["int8", "int4"])
def test_weight_only_on_cpu_runs_and_shrinks_linear_weights(name):
    pytest.importorskip("optimum.quanto")
    ref = Tiny().to(torch.bfloat16)
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        y_ref = ref(x).float()
    bf16_bytes, _ = describe_weights(ref)
    m = Tiny()
    m.load_state_dict(ref.state_dict())
    apply_quantization(m, {"name": name, "dtype": "bf16"}, skip_modules=("lm_head",))
    nbytes, dtype = describe_weights(m)
    linear_bf16 = sum(p.numel() * 2 for p in ref.body.parameters() if p.dim() == 2)
    assert name in dtype
    assert type(m.body[0].weight).__name__ != "Parameter"  # really a packed quantized tensor
    assert m.lm_head.weight.dtype == torch.bfloat16  # skipped, as the policy's list says
    saved = bf16_bytes - nbytes
    assert saved > (0.4 if name == "int8" else 0.6) * linear_bf16
    with torch.no_grad():
        y = m(x).float()
    assert torch.isfinite(y).all()
    assert (y - y_ref).abs().max() < (0.1 if name == "int8" else 0.5) * y_ref.abs().max()


@pytest.mark.parametrize("name", ["bf16", "fp16", "int8"])
def test_keep_dtype_parameters_survive_every_cast_with_their_values(name):
    """pi0's precision policy: fp32-kept parameters (here the embedding and lm_head) are neither cast
    nor round-tripped by the cast or by int8's compute-dtype cast; the rest is cast as usual."""
    if name == "int8":
        pytest.importorskip("optimum.quanto")
    m = Tiny()
    embed, head = m.embed.weight.detach().clone(), m.lm_head.weight.detach().clone()
    apply_quantization(m, {"name": name, "dtype": "bf16"}, skip_modules=("lm_head",), keep_dtype=("embed", "lm_head"))
    assert m.embed.weight.dtype == torch.float32 and torch.equal(m.embed.weight, embed)
    assert m.lm_head.weight.dtype == torch.float32 and torch.equal(m.lm_head.weight, head)
    if name == "int8":
        assert type(m.body[0].weight).__name__ != "Parameter" and m.body[0].bias.dtype == torch.bfloat16
    else:
        assert m.body[0].weight.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
    # without keep_dtype the same cast does reach them
    plain = Tiny()
    apply_quantization(plain, {"name": name, "dtype": "bf16"}, skip_modules=("lm_head",))
    assert plain.embed.weight.dtype != torch.float32 and plain.lm_head.weight.dtype != torch.float32


def test_a_layer_both_quantized_and_kept_is_refused():
    pytest.importorskip("optimum.quanto")
    with pytest.raises(QuantizationError, match="both quantized and kept"):
        apply_quantization(Tiny(), {"name": "int8", "dtype": "bf16"}, skip_modules=("lm_head",), keep_dtype=("body",))


def test_skip_modules_select_linears_by_name_component():
    names = linear_names(Tiny(), ["lm_head"])
    assert names == ["body.0", "body.2"]
    with pytest.raises(QuantizationError, match="no nn.Linear"):
        apply_quantization(Tiny(), {"name": "int8", "skip_modules": ["body", "lm_head"]})


@pytest.mark.parametrize(
    "node,match",
    [
        ({"name": "int3"}, "unknown"),
        ({"dtype": "bf16"}, "has no `name`"),
        ({"name": "int8", "backend": "bitsandbytes"}, "needs a CUDA device"),
        ({"name": "int8", "backend": "tensorrt"}, "backend 'tensorrt' unknown"),
        ({"name": "int4", "dtype": "fp16"}, "needs bf16"),
        ({"name": "int8", "dtype": "int2"}, "dtype 'int2' unknown"),
    ],
)
def test_unsupported_settings_fail_loudly(node, match):
    with pytest.raises(QuantizationError, match=match):
        apply_quantization(Tiny(), node, "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_request_without_cuda_is_refused():
    with pytest.raises(QuantizationError, match="CUDA is not available"):
        apply_quantization(Tiny(), {"name": "bf16"}, "cuda")


def test_quantized_openvla_policy_acts_and_reports(tiny_dirs_for_quant):
    pytest.importorskip("optimum.quanto")
    from omegaconf import OmegaConf
    from vla_gym.policies.openvla import OpenVLAPolicy
    from vla_gym.policies.testing import observation_batch

    from vla_gym.policy import act_one

    batch = observation_batch(2)
    sizes = {}
    for name in ("bf16", "int8", "int4"):
        node = OmegaConf.load(CONF / f"{name}.yaml")
        pol = OpenVLAPolicy.from_pretrained(tiny_dirs_for_quant, device="cpu", quantization=node)
        action = act_one(pol, batch[0])
        assert action.shape == (1, 7) and np.all(np.isfinite(action))
        assert pol.act(batch).actions.shape == (2, 1, 7)
        info = pol.info()
        assert info.quantization == name
        sizes[name] = info.weight_bytes
        if name != "bf16":  # the yaml leaves skip_modules to the policy: OpenVLA keeps lm_head
            assert type(pol.model.language_model.lm_head).__name__ == "Linear"
    assert sizes["int4"] < sizes["int8"] < sizes["bf16"]


def test_weight_only_yamls_leave_skip_modules_to_the_policy():
    from omegaconf import OmegaConf

    for name in ("int8", "int4"):
        assert OmegaConf.load(CONF / f"{name}.yaml").skip_modules is None


def test_policy_skip_list_applies_unless_the_node_sets_skip_modules():
    pytest.importorskip("optimum.quanto")

    def quantized(model):
        return sorted(n for n, m in model.named_modules() if "QLinear" in type(m).__name__)

    m = Tiny()
    apply_quantization(m, {"name": "int8", "skip_modules": None}, skip_modules=("lm_head", "0"))
    assert quantized(m) == ["body.2"]
    m = Tiny()
    apply_quantization(m, {"name": "int8", "skip_modules": ["body"]}, skip_modules=("lm_head", "0"))
    assert quantized(m) == ["lm_head"]  # an explicit config list overrides the policy's
    m = Tiny()
    apply_quantization(m, {"name": "int8"})  # no policy list: the core skips nothing by itself
    assert quantized(m) == ["body.0", "body.2", "lm_head"]


@pytest.fixture(scope="module")
def tiny_dirs_for_quant(tmp_path_factory):
    pytest.importorskip("timm")
    from vla_gym.policies.openvla.make_tiny import norm_stats, write_hf_checkpoint

    out = tmp_path_factory.mktemp("quant") / "openvla"
    write_hf_checkpoint(out, norm_stats("libero_spatial_no_noops", with_proprio=False))
    return out
