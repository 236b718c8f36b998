"""Let robosuite's own camera observables render only when someone will see the frame.

Why robosuite's observables and not ``sim.render`` after ``step()``: robosuite 1.4 samples
every observable (camera images and proprio alike) inside the physics sub-step loop, when the
observable's timer fires, a few milliseconds before ``step()`` returns. The raw env's
``agentview_image`` -- what the published evals fed their policies -- comes from that instant;
a render after the step shows a later one (the wrist camera differs on most pixels). So
vla_gym builds the simulator with camera observables for exactly the requested cameras at the
requested size and reads their frames.

Why a gate: those observables would also render during reset and the settle steps, frames no
one sees (two cameras at 256 cost ~140 ms per step on a CPU renderer). While the gate is
closed each camera sensor returns a preallocated black frame instead of rendering. The
observables' sampling clocks advance exactly as when open, so the frame sampled once the gate
opens again is the reference frame, from the reference instant.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np

IMAGE_SUFFIX = "_image"


def image_key(mujoco_camera: str) -> str:
    """robosuite's observation key of a camera's RGB frame."""
    return f"{mujoco_camera}{IMAGE_SUFFIX}"


def frames_are_bottom_up() -> bool:
    """Whether robosuite's camera observables hold raw OpenGL (bottom-up) frames.

    robosuite flips them itself only under ``macros.IMAGE_CONVENTION = "opencv"``.
    """
    from robosuite import macros

    return macros.IMAGE_CONVENTION == "opengl"


class CameraSensorGate:
    """Switch robosuite's camera RGB sensors between rendering (open) and a black frame (closed).

    Installs itself on one robosuite env: it wraps the camera sensors that exist now and, by
    shadowing ``_create_camera_sensors`` on the instance, those a hard reset (LIBERO rebuilds
    its model and observables on every reset) creates later.
    """

    def __init__(self, sim_env: Any) -> None:
        self.is_open = True
        self.renders = 0
        """Frames rendered through the gate (for tests and benchmarks)."""
        original_create = sim_env._create_camera_sensors

        def create_gated(cam_name, cam_w, cam_h, cam_d, cam_segs, modality="image"):
            sensors, names = original_create(cam_name, cam_w, cam_h, cam_d, cam_segs, modality=modality)
            gated = [self._gate(s, (cam_h, cam_w, 3)) if n.endswith(IMAGE_SUFFIX) else s
                     for s, n in zip(sensors, names)]
            return gated, names

        with self.closed():
            for name, observable in list(sim_env._observables.items()):
                if name.endswith(IMAGE_SUFFIX) and observable.modality == "image":
                    shape = tuple(observable._data_shape)
                    sim_env.modify_observable(name, "sensor", self._gate(observable._sensor, shape))
        sim_env._create_camera_sensors = create_gated

    def _gate(self, sensor: Callable[[dict], np.ndarray], shape: tuple[int, ...]) -> Callable[[dict], np.ndarray]:
        blank = np.zeros(shape, dtype=np.uint8)

        def gated_sensor(obs_cache: dict) -> np.ndarray:
            if not self.is_open:
                return blank
            self.renders += 1
            return sensor(obs_cache)

        gated_sensor.__modality__ = sensor.__modality__  # robosuite's @sensor marker
        return gated_sensor

    @contextlib.contextmanager
    def closed(self) -> Iterator[None]:
        """Within the block, camera sensors return black frames and render nothing."""
        previous, self.is_open = self.is_open, False
        try:
            yield
        finally:
            self.is_open = previous
