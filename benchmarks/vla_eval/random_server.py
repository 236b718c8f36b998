"""Random-action model server for AllenAI vla-eval: the ``random`` policy of the side-by-side.

Why it exists: ``benchmarks/rollout_throughput.py --vla-eval PYTHON`` times vla-eval 0.8.0 on
the workload it times vla_gym on, and vla-eval runs a policy only as a model server. This one
samples what vla_gym's ``random`` policy samples (uniform in [-1, 1]^7, float32; one NumPy
generator per episode, seeded from ``seed`` and the episode count) and checks every observation
it gets: the cameras and the image size the comparison claims (agentview + wrist at 256x256),
so a run that sent anything else errors instead of being timed.

Run with the interpreter of the venv where vla-eval is installed (not vla_gym's)::

    PYTHON benchmarks/vla_eval/random_server.py --port 8000 [--args.seed 0]

It is our harness code on vla-eval's public API (``PredictModelServer``, ``run_server``).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from vla_eval.model_servers.base import SessionContext
from vla_eval.model_servers.predict import PredictModelServer
from vla_eval.model_servers.serve import run_server
from vla_eval.specs import GRIPPER_CLOSE_POS, IMAGE_RGB, LANGUAGE, POSITION_DELTA, ROTATION_AA, DimSpec
from vla_eval.types import Action, Observation


class RandomModelServer(PredictModelServer):
    """Uniform random 7-D actions; rejects observations without the expected camera images.

    Args:
        seed: Base seed; episode k (in the order episodes start on this server) uses ``seed + k``.
        cameras: Image keys every observation must carry.
        image_size: Height and width every one of those images must have.
    """

    def __init__(self, seed: int = 0, cameras: list[str] | None = None, image_size: int = 256) -> None:
        super().__init__()
        self.seed = seed
        self.cameras = list(cameras) if cameras is not None else ["agentview", "wrist"]
        self.image_size = image_size
        self._episodes = itertools.count()
        self._rngs: dict[str, np.random.Generator] = {}

    async def on_episode_start(self, config: dict[str, Any], ctx: SessionContext) -> None:
        """Seed a fresh generator for the session's new episode."""
        await super().on_episode_start(config, ctx)
        self._rngs[ctx.session_id] = np.random.default_rng(self.seed + next(self._episodes))

    def predict(self, obs: Observation, ctx: SessionContext) -> Action:
        """Check the images, then draw one action in [-1, 1]^7."""
        images = obs.get("images") or {}
        want = (self.image_size, self.image_size, 3)
        for cam in self.cameras:
            img = images.get(cam)
            if img is None or tuple(np.shape(img)) != want:
                got = None if img is None else tuple(np.shape(img))
                raise ValueError(f"observation camera {cam!r}: expected an image of shape {want}, got {got}")
        rng = self._rngs.setdefault(ctx.session_id, np.random.default_rng(self.seed))
        return {"actions": rng.uniform(-1.0, 1.0, 7).astype(np.float32)}

    def get_action_spec(self) -> dict[str, DimSpec]:
        """LIBERO's delta end-effector action, as vla-eval's LIBERO benchmark declares it."""
        return {"position": POSITION_DELTA, "rotation": ROTATION_AA, "gripper": GRIPPER_CLOSE_POS}

    def get_observation_spec(self) -> dict[str, DimSpec]:
        """The camera images (the policy reads none of them, but they must be rendered and sent)."""
        return {**{cam: IMAGE_RGB for cam in self.cameras}, "language": LANGUAGE}


if __name__ == "__main__":
    run_server(RandomModelServer)
