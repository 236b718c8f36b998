"""vla_gym: evaluate vision-language-action policies in LIBERO and robosuite via Gymnasium.

Importing the package registers the ``vla_gym/...`` Gymnasium ids; simulators, torch and
model code are imported only when an env or policy is built.
"""

from __future__ import annotations

import logging
import os

# Headless rendering: EGL unless the user chose another backend. Must be set before
# robosuite/mujoco are imported.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"] if os.environ["MUJOCO_GL"] in ("egl", "osmesa") else "egl")

from vla_gym import envs  # noqa: E402  (registers the env ids)

__version__ = "0.1.0"
__all__ = ["envs", "evaluate", "__version__"]


def __getattr__(name: str):
    # vla_gym.evaluate(policy, env=..., tasks=..., episodes=..., output_dir=...): imported on first use
    if name == "evaluate":
        from vla_gym.rollout import evaluate

        return evaluate
    raise AttributeError(f"module 'vla_gym' has no attribute {name!r}")

# robosuite warns about a missing private macro file and PyOpenGL logs at INFO on import;
# neither is actionable for users of vla_gym.
logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
logging.getLogger("OpenGL").setLevel(logging.WARNING)
