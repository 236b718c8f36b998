"""Shared test set-up: headless EGL rendering and a private LIBERO config dir."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
if "LIBERO_CONFIG_PATH" not in os.environ:  # a private one for this session, removed at its end
    os.environ["LIBERO_CONFIG_PATH"] = tempfile.mkdtemp(prefix="vla_gym_libero_cfg_")
    atexit.register(shutil.rmtree, os.environ["LIBERO_CONFIG_PATH"], True)

import pytest  # noqa: E402

import vla_gym  # noqa: E402,F401  (registers env ids)

try:  # Tests build envs in this process (EGL/llvmpipe) and later ones import torch: triton's LLVM loaded
    import timm  # noqa: E402,F401  # after llvmpipe's segfaults, so the torch stack is loaded first, once.
except ImportError:  # the core install (no torch extra): only the torch-free tests can run anyway
    pass

PYTHON = sys.executable


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child processes running vla_gym commands."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env
