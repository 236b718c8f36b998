"""Loading untrusted weight and stats files without executing code from them.

- :func:`read_json`: a checkpoint's JSON file (configs, stats, processor files), size-bounded.
- :func:`load_safetensors`: the preferred format (no code, bounded parsing).
- :func:`load_torch_state_dict`: ``torch.load(weights_only=True)`` of a tensor dict (no arbitrary
  unpickling; DDP's ``module.`` prefix stripped).
- :func:`load_restricted_pickle`: opt-in only, for stats files that only ship as pickles: an
  unpickler that can build plain containers, numbers, strings and NumPy arrays and nothing else,
  with a size bound. Any other global (``os.system``, ``builtins.eval``, a torch class) is refused.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

from vla_gym.policies.toolkit.errors import CheckpointError

MAX_JSON_BYTES = 16 * 2**20
"""Configs, stats and processor files are kilobytes to a few megabytes (a tokenizer.json ~2 MB)."""
MAX_PICKLE_BYTES = 64 * 2**20
"""Stats pickles are kilobytes; anything larger than this is refused before unpickling."""

_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("collections", "OrderedDict"), ("builtins", "slice"),
})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a stats pickle")
        return super().find_class(module, name)


def load_restricted_pickle(file: Path, *, max_bytes: int = MAX_PICKLE_BYTES) -> Any:
    """Unpickle ``file`` allowing only containers, numbers, strings and NumPy arrays.

    Callers opt in explicitly (there is no pickle anywhere else); the result still needs its own
    validation (keys, shapes) by the caller.
    """
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file} is missing")
    size = file.stat().st_size
    if size > max_bytes:
        raise CheckpointError(f"{file} is {size} bytes; a stats pickle over {max_bytes} bytes is refused")
    try:
        return _RestrictedUnpickler(io.BytesIO(file.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{file}: refused or unreadable stats pickle ({type(exc).__name__}: {exc})") from exc


def read_json(file: Path, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The JSON object in ``file`` (``what`` it is, for messages); :class:`CheckpointError` naming the
    file and the fix when it is missing, over ``max_bytes``, not JSON or not an object."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file} is missing ({what}); the checkpoint directory is incomplete")
    size = file.stat().st_size
    if size > max_bytes:
        raise CheckpointError(f"{file} is {size} bytes, over the {max_bytes} allowed for {what}; refusing to parse it")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file} is corrupted: not valid JSON ({exc}); re-download or re-copy it") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} ({what}): expected a JSON object, got {type(data).__name__}")
    return data


def load_safetensors(file: Path) -> dict[str, Any]:
    """All tensors of one ``.safetensors`` file on the CPU; :class:`CheckpointError` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"weight file {file} is missing; re-download the checkpoint")
    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"weight file {file} is corrupted or truncated ({exc}); re-download it") from exc


def load_torch_state_dict(file: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a tensor state dict, stripping DDP's ``module.`` prefix."""
    import torch

    file = Path(file)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{file} could not be loaded with torch.load(weights_only=True) ({type(exc).__name__}: {exc}); "
            "it is corrupted or holds non-tensor objects. Re-download it."
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file}: expected a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
