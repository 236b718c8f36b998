"""Background/texture perturbation: colours of table, walls, floor and objects.

robosuite's ``TextureModder`` is broken on MuJoCo 3 (``MjModel`` has no ``tex_rgb``), so this
recolours through ``model.mat_rgba`` (which multiplies a material's texture, so textured
surfaces keep their pattern but change hue) and ``model.geom_rgba`` for geoms without material
(LIBERO-plus "background" axis; LIBERO's own ``scene_properties`` swap whole textures instead).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from vla_gym.perturbations._common import ROBOT_PREFIXES, ModelEditWrapper

GROUPS = ("table", "walls", "floor", "objects")


def geom_group(model: Any, geom: int) -> str | None:
    """Which colour group a geom belongs to, by its own, its material's and its body's names."""
    body = model.body(int(model.geom_bodyid[geom])).name
    if body.startswith(ROBOT_PREFIXES):
        return None
    matid = int(model.geom_matid[geom])
    names = (model.geom(geom).name + " " + (model.material(matid).name if matid >= 0 else "")).lower()
    if "floor" in names:
        return "floor"
    if "wall" in names:
        return "walls"
    if body == "table" or "table" in names:
        return "table"
    if body == "world":
        return None
    return "objects"


class BackgroundPerturbation(ModelEditWrapper):
    """Recolour table, walls, floor and objects; geometry, physics and robot untouched.

    At strength ``s`` each group gets a random colour ``c`` (uniform in RGB, drawn from the
    episode seed) and every geom of the group is blended to ``(1 - s) * rgb + s * c``; alpha is
    kept. "objects" are all non-robot bodies other than the world, table, walls and floor
    (movable objects and LIBERO fixtures), each object with its own colour. The robot keeps
    its colours.

    Args:
        env: A vla_gym env.
        strength: In [0, 1]; 0 leaves every colour as it is, 1 replaces it.
        groups: Which of ``table``, ``walls``, ``floor``, ``objects`` to recolour.

    Examples:
        >>> import gymnasium as gym, vla_gym
        >>> from vla_gym.perturbations import BackgroundPerturbation
        >>> env = BackgroundPerturbation(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=1.0, groups=["table"])
        >>> obs, info = env.reset(seed=0)
        >>> env.close()
    """

    model_fields = ("geom_rgba", "mat_rgba")
    salt = "background"

    def __init__(self, env: gym.Env, strength: float, groups: tuple[str, ...] | list[str] = GROUPS) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, groups=list(groups))
        super().__init__(env, strength)
        bad = [g for g in groups if g not in GROUPS]
        if bad or not groups:
            raise ValueError(f"unknown background groups {bad or groups!r}; choose from {list(GROUPS)}")
        self.groups = tuple(groups)

    def apply(self, model: Any, rng: np.random.Generator) -> None:
        """Blend each selected group's geoms/materials toward this episode's colour."""
        s = self.strength
        colours = {g: rng.uniform(0.0, 1.0, size=3) for g in GROUPS}  # drawn for all: stable per group
        object_seed = int(rng.integers(2**31))
        done_mats: set[int] = set()
        for geom in range(model.ngeom):
            group = geom_group(model, geom)
            if group is None or group not in self.groups:
                continue
            colour = colours[group]
            if group == "objects":
                root = int(model.body_rootid[model.geom_bodyid[geom]])
                colour = np.random.default_rng([object_seed, root]).uniform(0.0, 1.0, size=3)
            matid = int(model.geom_matid[geom])
            if matid >= 0:
                if matid not in done_mats:
                    model.mat_rgba[matid, :3] = (1 - s) * model.mat_rgba[matid, :3] + s * colour
                    done_mats.add(matid)
            else:
                model.geom_rgba[geom, :3] = (1 - s) * model.geom_rgba[geom, :3] + s * colour
