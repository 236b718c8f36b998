"""Tiny OpenVLA / OpenVLA-OFT checkpoints, written once per session with the public make_tiny."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("transformers")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``openvla``, ``openvla-prismatic`` and ``openvla-oft`` tiny checkpoints (read-only use)."""
    from vla_gym.policies.tiny_checkpoints import make_all

    return make_all(tmp_path_factory.mktemp("tiny_ckpts"))


@pytest.fixture
def tiny_copy(tiny_dirs: dict[str, Path], tmp_path: Path):
    """Copy one tiny checkpoint into a per-test dir that the test may damage."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(tiny_dirs[name], dst)
        return dst

    return copy
