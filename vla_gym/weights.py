"""What identifies a policy's weights in a run's fingerprint.

A run directory is resumed only when its config fingerprint matches; the config names a
checkpoint by its *path*, and a policy object passed to :func:`vla_gym.evaluate` only by its
class. Retrained weights at the same path (or in the same object) would then silently reuse the
old results. :func:`weights_identity` adds what does identify them: a digest of the files the
policy config points at, and/or an explicit ``policy_version`` given by the caller.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

DEFAULT_WEIGHT_PATHS = ("checkpoint", "base_checkpoint")
"""The keys digested when the policy class declares none (:attr:`vla_gym.policy.Policy.weight_paths`)."""
SAMPLE_BYTES = 16 << 20
"""Files up to 2x this are hashed whole; larger ones by size, head and tail (retrained weights
change both; hashing a 15 GB checkpoint whole would take longer than a short evaluation)."""
MAX_FILES = 10_000


def file_digest(path: Path) -> str:
    """sha256 of a file's content (size + head + tail for files over 2 x :data:`SAMPLE_BYTES`)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        if size <= 2 * SAMPLE_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(SAMPLE_BYTES))
            f.seek(size - SAMPLE_BYTES)
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def path_digest(path: str | os.PathLike) -> str:
    """Digest of a file, or of every file below a directory (relative names and contents), 16 hex digits."""
    path = Path(path).expanduser()
    h = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts[-1:]))
        for p in files[:MAX_FILES]:
            h.update(str(p.relative_to(path)).encode() + b"\0" + file_digest(p).encode())
    else:
        h.update(file_digest(path).encode())
    return h.hexdigest()[:16]


def weights_identity(policy_cfg: Any, policy: Any = None, version: str | None = None,
                     keys: tuple[str, ...] = DEFAULT_WEIGHT_PATHS) -> dict[str, Any] | None:
    """``{"version": ..., "files": {key: digest}}`` for the fingerprint, or None when nothing identifies the weights.

    ``policy_cfg``: the (plain or OmegaConf) policy config; its ``keys`` (the policy class's
    ``weight_paths``) naming existing paths are digested. ``policy``: a built policy object; a ``checkpoint`` attribute naming an
    existing path is digested too.
    """
    files: dict[str, str] = {}
    get = getattr(policy_cfg, "get", None)
    for key in keys:
        value = get(key) if get is not None and key in policy_cfg else None
        if isinstance(value, (str, os.PathLike)) and Path(value).expanduser().exists():
            files[key] = path_digest(value)
    ckpt = getattr(policy, "checkpoint", None)
    if isinstance(ckpt, (str, os.PathLike)) and Path(ckpt).expanduser().exists():
        files["object.checkpoint"] = path_digest(ckpt)
    ident: dict[str, Any] = {}
    if version is not None:
        ident["version"] = str(version)
    if files:
        ident["files"] = files
    return ident or None
