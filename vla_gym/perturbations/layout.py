"""Layout perturbation: shift movable objects' start positions (LIBERO-plus "layout" axis).

For distractor objects and scripted layout changes on LIBERO, use the LIBERO-PRO suites
instead (``perturbation=libero_pro_with_mug`` / ``libero_pro_swap`` / ``libero_pro_object``,
which select ``<suite>_with_mug`` etc. through ``env_kwargs``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vla_gym.perturbations._common import ModelEditWrapper, check_positive, mj_data, movable_bodies


class LayoutPerturbation(ModelEditWrapper):
    """Shift each movable object's initial xy by a seeded offset, before the settle steps.

    At strength ``s`` each free-joint object (not the robot, not fixtures such as LIBERO
    cabinets) moves by exactly ``s * max_shift_m`` (default 5 cm) in the table plane, in a
    random direction drawn from the episode seed; its velocity is zeroed. Height and
    orientation are kept: LIBERO objects start a few cm above their support and drop during the
    settle steps. Large shifts can push objects into each other or off their support; the
    simulator resolves that, so check videos at high strength.

    Args:
        env: A vla_gym env.
        strength: In [0, 1]; 0 keeps the layout.
        max_shift_m: Shift at strength 1, metres.
        objects: Body-name prefixes of the objects to move (default: all movable objects).

    Examples:
        >>> import gymnasium as gym, vla_gym
        >>> from vla_gym.perturbations import LayoutPerturbation
        >>> env = LayoutPerturbation(gym.make("vla_gym/RobosuiteLift-v1", image_size=64, privileged=True), strength=1.0)
        >>> obs, info = env.reset(seed=0)
        >>> env.close()
    """

    salt = "layout"

    def __init__(self, env: gym.Env, strength: float, max_shift_m: float = 0.05,
                 objects: list[str] | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, max_shift_m=max_shift_m, objects=objects)
        super().__init__(env, strength)
        self.max_shift_m = check_positive("max_shift_m", max_shift_m)
        self.objects = tuple(objects) if objects else None

    def apply(self, model: Any, rng: np.random.Generator) -> None:
        """Move the selected objects' free joints in x/y."""
        data = mj_data(self._base)
        bodies = movable_bodies(model)
        names = [model.body(b).name for b in bodies]
        if self.objects is not None:
            missing = [o for o in self.objects if not any(n.startswith(o) for n in names)]
            if missing:
                raise ValueError(f"LayoutPerturbation: no movable object matches {missing}; movable objects: {names}")
        for b, name in zip(bodies, names):
            angle = rng.uniform(0.0, 2 * np.pi)  # drawn for every object so choices stay aligned
            if self.objects is not None and not name.startswith(self.objects):
                continue
            jnt = int(model.body_jntadr[b])
            qadr, vadr = int(model.jnt_qposadr[jnt]), int(model.jnt_dofadr[jnt])
            data.qpos[qadr:qadr + 2] += self.strength * self.max_shift_m * np.array([np.cos(angle), np.sin(angle)])
            data.qvel[vadr:vadr + 6] = 0.0
