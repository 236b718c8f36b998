"""TinyVLA's ``dataset_stats`` without unpickling code.

``train_tinyvla.py`` saves ``{action_mean, action_std, action_min, action_max, qpos_mean, qpos_std,
example_qpos}`` (numpy arrays) as ``dataset_stats.pkl`` with ``pickle.dump``; the eval script
``pickle.load``s it, which runs any code the file names. Here the stats are read from a JSON
(``dataset_stats.json``: lists of numbers) or safetensors (``dataset_stats.safetensors``) twin,
written once by ``python -m vla_gym.policies.tinyvla.convert_stats IN.pkl OUT.json``; the pickle
itself is only read behind ``allow_pickle=True``, through the toolkit's restricted unpickler
(numpy arrays, dtypes and plain containers; anything else is refused with its class name).

Kinds: the UNet was trained on actions min-max scaled to [-1, 1] (``action_min`` already holds
the original's -1e-4 margin, ``action_max`` its +1e-4), the state on ``(qpos - qpos_mean) /
qpos_std`` (``std`` clipped at 1e-2 when saved).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_gym.policies.toolkit.errors import CheckpointError
from vla_gym.policies.toolkit.norm_stats import NormKind, NormStats
from vla_gym.policies.toolkit.safe_load import load_restricted_pickle, read_json

REQUIRED = ("action_min", "action_max", "qpos_mean", "qpos_std")
KNOWN = (*REQUIRED, "action_mean", "action_std", "example_qpos")
STATS_NAMES = ("dataset_stats.json", "dataset_stats.safetensors")
PICKLE_NAME = "dataset_stats.pkl"


@dataclass(frozen=True)
class TinyVLAStats:
    """Action min/max and state mean/std, with the file they came from."""

    action: NormStats
    state: NormStats
    source: Path


def _arrays(raw: Any, source: Path) -> dict[str, np.ndarray]:
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: dataset stats must be a mapping, got {type(raw).__name__}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{source}: dataset stats lack {missing} (have {sorted(map(str, raw))})")
    out = {}
    for key in KNOWN:
        if key not in raw:
            continue
        try:
            arr = np.asarray(raw[key], dtype=np.float64).reshape(-1) if key != "example_qpos" \
                else np.asarray(raw[key], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: {key} is not numeric ({exc})") from exc
        if not np.all(np.isfinite(arr)):
            raise CheckpointError(f"{source}: {key} has non-finite values")
        out[key] = arr
    return out


def to_stats(raw: Any, source: Path) -> TinyVLAStats:
    """Checked :class:`TinyVLAStats` from a stats mapping (as loaded from any of the formats)."""
    arrays = _arrays(raw, source)
    if np.any(arrays["action_max"] <= arrays["action_min"]):
        raise CheckpointError(f"{source}: action_max must exceed action_min in every dimension")
    if np.any(arrays["qpos_std"] <= 0):
        raise CheckpointError(f"{source}: qpos_std must be positive")
    action = NormStats.from_mapping(NormKind.MIN_MAX, {"min": arrays["action_min"], "max": arrays["action_max"]},
                                    source=str(source))
    state = NormStats.from_mapping(NormKind.MEAN_STD, {"mean": arrays["qpos_mean"], "std": arrays["qpos_std"]},
                                   source=str(source))
    return TinyVLAStats(action, state, Path(source))


def read_stats_file(file: Path, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The stats arrays of a ``.json``, ``.safetensors`` or (opt-in) ``.pkl`` file."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"stats file {file} is missing")
    suffix = file.suffix.lower()
    if suffix == ".json":
        raw = read_json(file, "TinyVLA stats")
    elif suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            raw = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{file} is corrupted ({exc}); re-convert it") from exc
    elif suffix == ".pkl":
        if not allow_pickle:
            raise CheckpointError(
                f"{file} is a pickle, which is not read by default. Convert it once with "
                f"`python -m vla_gym.policies.tinyvla.convert_stats {file} {file.with_suffix('.json')}` "
                "(restricted unpickler: numpy arrays and plain containers only), or set "
                "policy.allow_stats_pickle=true to read it with that same restricted unpickler."
            )
        raw = load_restricted_pickle(file)
    else:
        raise CheckpointError(f"{file}: unknown stats format {suffix!r}; use .json, .safetensors or .pkl")
    return _arrays(raw, file)


def find_stats(dirs: list[Path], explicit: Path | None, allow_pickle: bool) -> TinyVLAStats:
    """Stats from ``explicit``, else the first JSON/safetensors twin (or opt-in pickle) in ``dirs``."""
    if explicit is not None:
        return to_stats(read_stats_file(explicit, allow_pickle), explicit)
    for d in dirs:
        for name in STATS_NAMES:
            if (d / name).is_file():
                return to_stats(read_stats_file(d / name), d / name)
    for d in dirs:
        if (d / PICKLE_NAME).is_file():
            return to_stats(read_stats_file(d / PICKLE_NAME, allow_pickle), d / PICKLE_NAME)
    raise CheckpointError(f"no dataset stats ({', '.join(STATS_NAMES)} or {PICKLE_NAME}) in "
                          f"{[str(d) for d in dirs]}; train_tinyvla.py writes dataset_stats.pkl in the run dir, "
                          "or pass policy.stats=FILE")


def write_stats(arrays: dict[str, np.ndarray], out: Path) -> Path:
    """Write stats arrays as JSON (lists) or safetensors (float64), by ``out``'s suffix."""
    out = Path(out)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in arrays.items()}, indent=1))
    elif out.suffix.lower() == ".safetensors":
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, str(out))
    else:
        raise ValueError(f"{out}: write .json or .safetensors")
    return out
