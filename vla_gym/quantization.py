"""Quantization as a config axis, applied by the policy loader to any torch policy.

The Hydra group ``conf/quantization/<name>.yaml`` gives a node such as::

    name: int8            # none | fp32 | fp16 | bf16 | int8 | int4
    dtype: bf16           # activation / non-quantized weight dtype (int8/int4 only)
    backend: auto         # auto | quanto | bitsandbytes
    skip_modules: null    # null: the policy's ``quantization_skip``; a list overrides it

and a loader calls :func:`apply_quantization(module, node, device, skip_modules=policy_cls.quantization_skip)`
once on the loaded model: each policy family declares on its class which modules must stay in
full precision (OpenVLA ``lm_head``; OFT also its heads and FiLM ``scale``/``shift``). This module
names no family's modules: without a list, every ``nn.Linear`` is quantized.

- ``none`` keeps the checkpoint's stored dtype; ``fp32``/``fp16``/``bf16`` are plain casts.
- ``int8``/``int4`` quantize the weights of every ``nn.Linear`` except ``skip_modules``
  (matched on dotted-name components, e.g. ``lm_head`` as the reference's bitsandbytes load
  does). On CUDA the backend is bitsandbytes (``Linear8bitLt`` / ``Linear4bit``), as the
  reference OpenVLA eval (``load_in_8bit`` / ``load_in_4bit``). On CPU it is optimum-quanto:
  measured on this 2-core CPU (torch 2.14, bf16 MLP 1024-4096-1024, batch 300) quanto int8
  ran in 56 ms and int4 in 55 ms against 40 ms for bf16, torchao 0.18 int8 weight-only in
  72 ms, and torchao int4 did not run at all on CPU (needs the ``mslk`` CUDA kernels or a
  packing format this build lacks). quanto's int4 CPU kernel (tinygemm) needs bf16
  activations, so ``int4`` with another ``dtype`` on CPU is refused.

Nothing falls back silently: a missing backend, a CPU/bitsandbytes pairing or an unknown name
raises :class:`QuantizationError` saying what to change. torch is imported lazily so that
``import vla_gym`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

NAMES = ("none", "fp32", "fp16", "bf16", "int8", "int4")


class QuantizationError(ValueError):
    """An unsupported quantization setting (name, dtype, backend or device combination)."""


def _dtype(name: str) -> torch.dtype:
    import torch

    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    if name not in table:
        raise QuantizationError(f"quantization dtype {name!r} unknown; use one of fp32, fp16, bf16")
    return table[name]


def _node(quantization: Mapping[str, Any] | str | None) -> dict[str, Any]:
    if quantization is None:
        return {"name": "none"}
    if isinstance(quantization, str):
        return {"name": quantization}
    node = dict(quantization)
    if "name" not in node:
        raise QuantizationError(f"quantization config {node} has no `name`; expected one of {NAMES}")
    return node


def linear_names(model: nn.Module, skip: tuple[str, ...] | list[str]) -> list[str]:
    """Dotted names of ``nn.Linear`` modules to quantize (a skip entry matches a name component)."""
    from torch import nn

    out = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not any(s in name.split(".") or name == s for s in skip):
            out.append(name)
    return out


def apply_quantization(
    model: nn.Module,
    quantization: Mapping[str, Any] | str | None,
    device: torch.device | str = "cpu",
    skip_modules: Sequence[str] = (),
    keep_dtype: Sequence[str] = (),
) -> str:
    """Cast or quantize ``model`` in place and move it to ``device``; return the setting's name.

    Args:
        model: Loaded model (any ``nn.Module``), weights on CPU.
        quantization: The Hydra ``quantization`` node, a bare name, or None (= ``none``).
        device: Target device.
        skip_modules: Modules int8/int4 keep in full precision unless the node sets
            ``skip_modules`` itself: the policy family's ``Policy.quantization_skip`` (loaders
            pass it explicitly). Empty: every ``nn.Linear`` is quantized.
        keep_dtype: Parameters whose dotted name contains one of these keep their dtype through
            every cast (fp16/bf16, and the compute-dtype cast of int8/int4): a family's fp32-kept
            norms and embeddings (pi0's precision policy). They must not be in quantized layers.

    Raises:
        QuantizationError: Unknown name/dtype/backend, or a combination that cannot run here.
    """
    import torch

    node = _node(quantization)
    name = str(node["name"])
    dev = torch.device(device)
    if name not in NAMES:
        raise QuantizationError(f"quantization {name!r} unknown; choose one of {list(NAMES)}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise QuantizationError(f"device {dev} requested but CUDA is not available")
    kept = _non_persistent_buffers(model)
    try:
        if name == "none":
            model.to(dev)
        elif name in ("fp32", "fp16", "bf16"):
            cast(model, dev, _dtype(name), keep_dtype)
        else:
            _weight_only(model, name, node, dev, tuple(skip_modules), tuple(keep_dtype))
    finally:
        _restore_buffers(model, kept, dev)
    return name


def _non_persistent_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Derived constants (e.g. rotary ``inv_freq``, float32 in every reference) that casts must not touch."""
    out = {}
    for mod_name, module in model.named_modules():
        for buf_name in getattr(module, "_non_persistent_buffers_set", ()):
            buf = module._buffers.get(buf_name)
            if buf is not None:
                out[f"{mod_name}.{buf_name}" if mod_name else buf_name] = buf
    return out


def _restore_buffers(model: nn.Module, kept: dict[str, torch.Tensor], dev: torch.device) -> None:
    for full, buf in kept.items():
        mod_name, _, buf_name = full.rpartition(".")
        module = model.get_submodule(mod_name) if mod_name else model
        module._buffers[buf_name] = buf.to(dev)


def cast(model: nn.Module, dev: torch.device | None, dtype: torch.dtype, keep: Sequence[str] = ()) -> None:
    """``model.to(dev, dtype)``, except parameters whose name contains an entry of ``keep``, which
    keep their dtype (and values: they are not round-tripped through ``dtype``)."""
    kept = {n: p.data for n, p in model.named_parameters() if any(k in n for k in keep)}
    model.to(dtype=dtype) if dev is None else model.to(device=dev, dtype=dtype)
    for n, data in kept.items():
        param = model.get_parameter(n)
        param.data = data.to(param.device)


def _weight_only(
    model: nn.Module, name: str, node: Mapping[str, Any], dev: torch.device, default_skip: tuple[str, ...],
    keep: tuple[str, ...] = (),
) -> None:
    compute = _dtype(str(node.get("dtype", "bf16")))
    explicit = node.get("skip_modules")  # null / absent: the policy family's own list
    skip = list(default_skip if explicit is None else explicit)
    backend = str(node.get("backend", "auto"))
    if backend == "auto":
        backend = "bitsandbytes" if dev.type == "cuda" else "quanto"
    targets = linear_names(model, skip)
    if not targets:
        raise QuantizationError(f"{name}: no nn.Linear modules left to quantize after skip_modules={skip}")
    clash = sorted({t for t in targets for k in keep if k in t + ".weight"})
    if clash:
        raise QuantizationError(f"{name}: layers {clash[:3]} are both quantized and kept in their dtype; "
                                "add them to skip_modules")
    if backend == "quanto":
        _quanto(model, name, compute, dev, targets, keep)
    elif backend == "bitsandbytes":
        if dev.type != "cuda":
            raise QuantizationError(
                f"{name} with backend=bitsandbytes needs a CUDA device (got {dev}); "
                "on CPU use backend=quanto "
                "(or backend=auto)"
            )
        _bitsandbytes(model, name, compute, dev, targets, node, keep)
    else:
        raise QuantizationError(f"quantization backend {backend!r} unknown; use auto, quanto or bitsandbytes")


def _quanto(model: nn.Module, name: str, compute: torch.dtype, dev: torch.device, targets: list[str],
            keep: tuple[str, ...] = ()) -> None:
    import torch

    try:
        from optimum.quanto import freeze, qint4, qint8, quantize
    except ImportError as exc:
        raise QuantizationError(
            f"quantization={name} on {dev.type} uses optimum-quanto, which is not installed: "
            "pip install 'vla_gym[torch]' (or pip install optimum-quanto)"
        ) from exc
    if name == "int4" and dev.type == "cpu" and compute != torch.bfloat16:
        raise QuantizationError(
            f"int4 on CPU runs quanto's tinygemm kernel, which needs bf16 activations; got dtype={compute}. "
            "Set quantization.dtype=bf16."
        )
    cast(model, dev, compute, keep)
    quantize(model, weights=qint8 if name == "int8" else qint4, include=targets)
    freeze(model)


def _bitsandbytes(
    model: nn.Module,
    name: str,
    compute: torch.dtype,
    dev: torch.device,
    targets: list[str],
    node: Mapping[str, Any],
    keep: tuple[str, ...] = (),
) -> None:
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise QuantizationError(
            f"quantization={name} on CUDA uses bitsandbytes, which is not installed: pip install bitsandbytes"
        ) from exc
    cast(model, None, compute, keep)
    for target in targets:
        parent_name, _, child = target.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        bias = old.bias is not None
        if name == "int8":
            new = bnb.nn.Linear8bitLt(
                old.in_features,
                old.out_features,
                bias=bias,
                has_fp16_weights=False,
                threshold=float(node.get("llm_int8_threshold", 6.0)),
            )
            new.weight = bnb.nn.Int8Params(old.weight.data, requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(
                old.in_features,
                old.out_features,
                bias=bias,
                compute_dtype=compute,
                quant_type=str(node.get("bnb_4bit_quant_type", "fp4")),
            )
            new.weight = bnb.nn.Params4bit(
                old.weight.data, requires_grad=False, quant_type=str(node.get("bnb_4bit_quant_type", "fp4"))
            )
        if bias:
            new.bias = old.bias
        setattr(parent, child, new)
    model.to(dev)  # moving Int8Params / Params4bit to CUDA performs the quantization


def tensor_bytes(t: torch.Tensor) -> int:
    """Storage bytes of a tensor, following tensor subclasses (quanto packed weights) to their data."""
    import torch

    if type(t) in (torch.Tensor, torch.nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        return t.numel() * t.element_size()
    names, _ = t.__tensor_flatten__()
    return sum(tensor_bytes(getattr(t, n)) for n in names)


def describe_weights(model: nn.Module) -> tuple[int, str]:
    """``(bytes of all parameters and buffers, dtype summary)``, e.g. ``(7.6e9, "int8+bfloat16")``."""
    total = 0
    dtypes: dict[str, int] = {}
    seen: set[int] = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        n = tensor_bytes(t)
        total += n
        label = _label(t)
        dtypes[label] = dtypes.get(label, 0) + n
    ordered = sorted(dtypes, key=lambda k: -dtypes[k])
    return total, "+".join(ordered) if ordered else "none"


def _label(t: torch.Tensor) -> str:
    cls = type(t).__name__
    if "QBits" in cls:
        return "int4"
    if "QBytes" in cls or cls in ("Int8Params",):
        return "int8"
    if cls == "Params4bit":
        return "int4"
    return str(t.dtype).replace("torch.", "")
