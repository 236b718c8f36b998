"""Keep robosuite's offscreen render context across LIBERO's hard resets when the assets are unchanged.

Why: LIBERO resets by rebuilding its MuJoCo model from XML (robosuite ``hard_reset``), because
fixtures (cabinets, stoves, ...) are placed into the XML from the global NumPy RNG. robosuite
then builds a new EGL context and ``MjrContext`` for the new model, which uploads every texture
and mesh again: for libero_spatial that is ~190 MB of textures and ~0.85 s of a ~1.7 s reset on
a CPU renderer, every episode.

A ``MjrContext`` depends on the model only through its assets (meshes, textures, height fields,
skins), ``vis`` and ``stat``; it holds no body placement. Across resets of one task the rebuilt
model differs from the previous one only in ``body_pos`` / ``body_quat`` (measured on
libero_spatial: every other array and struct field is equal; the model the constructor built also
differs in ``site_rgba``, which robosuite's reset changes). So when everything but those
(:data:`PER_FRAME_FIELDS`) is equal, the context built for the first model serves the new one unchanged, and the pixels are
those of a freshly built context -- the reference fidelity test compares frames bit for bit with
LIBERO's own loop, which rebuilds the context on every reset. When anything else differs (a
perturbation changed a texture or a light, ``render_quality="fast"`` lowered the sample count),
the kept context is freed and robosuite's own constructor builds a new one, as before.

Usage: :func:`kept_render_context` around the reset (and any replayed resets) of one env.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

PER_FRAME_FIELDS = frozenset({"body_pos", "body_quat", "site_rgba"})
"""Model fields allowed to differ: fixture placement (what a LIBERO reset re-samples) and site colours
(robosuite's ``visualize()`` hides sites after each reset, not in the constructor). The scene reads
them on every frame (``mjv_updateScene``); no render context holds them."""

MAX_DEPTH = 3
"""Model -> ``vis`` -> ``vis.quality``: how deep the comparison follows nested MuJoCo structs."""


def _fields_equal(a: Any, b: Any, skip: frozenset[str] = frozenset(), depth: int = 0) -> bool:
    """Field-by-field equality of two MuJoCo structs, nested ones (``vis``, ``stat``, ``opt``) included."""
    for name in dir(a):
        if name.startswith("_") or name[:1].isupper() or name in skip:  # private, nested struct *types*, skipped
            continue
        x, y = getattr(a, name), getattr(b, name)
        if callable(x):
            continue
        if isinstance(x, np.ndarray):
            if x.shape != np.shape(y) or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                return False
        elif isinstance(x, (int, float, str, bytes)):
            if x != y:
                return False
        elif depth + 1 < MAX_DEPTH and not _fields_equal(x, y, depth=depth + 1):
            return False
    return True


def same_render_inputs(a: Any, b: Any) -> bool:
    """Whether two ``mujoco.MjModel`` are equal in everything except :data:`PER_FRAME_FIELDS`.

    A strict superset of what ``MjrContext`` reads (assets, ``vis``, ``stat``), so equal here means
    a context built from ``a`` is the context ``b`` would get.
    """
    return _fields_equal(a, b, skip=PER_FRAME_FIELDS)


def _adopt(ctx: Any, sim: Any, sim_env: Any) -> None:
    """Attach a kept context to a new ``MjSim``: per-model state fresh, GL context and MjrContext kept.

    Mirrors what robosuite 1.4's ``MjRenderContext.__init__`` sets up for a new sim (a fresh
    ``MjvScene`` with 1000 geoms, a fixed camera 0, default ``MjvOption`` / ``MjvPerturb``) and
    what ``_reset_internal`` then sets (the visual/collision geom groups).
    """
    import mujoco

    ctx.gl_ctx.make_current()
    sim.forward()  # as robosuite's constructor does before building the scene
    ctx.sim, ctx.model, ctx.data = sim, sim.model, sim.data
    ctx.scn = mujoco.MjvScene(sim.model._model, maxgeom=1000)
    ctx.cam = mujoco.MjvCamera()
    ctx.cam.fixedcamid = 0
    ctx.cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
    ctx.vopt = mujoco.MjvOption()
    ctx.pert = mujoco.MjvPerturb()
    ctx.pert.active = 0
    ctx.pert.select = 0
    ctx.pert.skinselect = -1
    sim.add_render_context(ctx)
    _show_geom_groups(ctx, sim_env)


def _show_geom_groups(ctx: Any, sim_env: Any) -> None:
    """The collision / visual geom groups robosuite's ``_reset_internal`` sets on its render context."""
    ctx.vopt.geomgroup[0] = 1 if sim_env.render_collision_mesh else 0
    ctx.vopt.geomgroup[1] = 1 if sim_env.render_visual_mesh else 0


def is_current(gl_ctx: Any) -> bool:
    """Whether robosuite's EGL context is this thread's current one (False for other GL backends).

    robosuite makes a context current once, when it builds it, and renders without making it
    current again. A context that is still current has seen no other context come and go since;
    one that is not may not survive that on Mesa (measured: after another env's context was
    destroyed while ours was current, our kept ``MjrContext`` rendered black frames), so it is
    rebuilt instead of kept.
    """
    handle = getattr(gl_ctx, "_context", None)
    if handle is None or type(gl_ctx).__name__ != "EGLGLContext":
        return False
    from OpenGL import EGL

    current = EGL.eglGetCurrentContext()
    return bool(current) and current.address == handle.address


def _build_new(sim_env: Any) -> None:
    """robosuite's own render context for the current sim (what its ``_reset_internal`` does)."""
    from robosuite.utils.binding_utils import MjRenderContextOffscreen

    _show_geom_groups(MjRenderContextOffscreen(sim_env.sim, device_id=sim_env.render_gpu_device_id), sim_env)


@contextlib.contextmanager
def kept_render_context(sim_env: Any, enabled: bool = True) -> Iterator[None]:
    """Within the block the env resets without building a render context; after it, the old one is reused.

    The old context is detached before robosuite's hard reset frees the old sim, so the reset
    (and any replayed resets inside the block) builds none; afterwards it is attached to the new
    sim when :func:`same_render_inputs` holds for the model it was built from, else freed and a new
    one built by robosuite's constructor. With ``enabled=False``, no context yet, or a context that
    is no longer the current one (:func:`is_current`) the block runs as a plain reset. On an
    exception the kept context is dropped (freed by its ``__del__``).
    """
    sim = getattr(sim_env, "sim", None)
    if (not enabled or sim is None or sim._render_context_offscreen is None or not sim_env.has_offscreen_renderer
            or not is_current(sim._render_context_offscreen.gl_ctx)):
        # Hold no reference to the old context here: robosuite frees it inside the reset, before
        # building the new one; freed any later, its EGL free() (eglReleaseThread) would un-current
        # the new context and every later frame would come out black.
        yield
        return
    ctx = sim._render_context_offscreen
    built_from = sim.model._model  # the model the kept context was made for
    sim._render_context_offscreen = None  # so the reset's _destroy_sim leaves the context alone
    sim_env.has_offscreen_renderer = False  # so its _reset_internal builds no new one
    try:
        yield
    finally:
        sim_env.has_offscreen_renderer = True
    new_sim = sim_env.sim
    if new_sim is sim:  # a soft reset kept the sim: put the context back
        sim.add_render_context(ctx)
    elif same_render_inputs(built_from, new_sim.model._model):
        _adopt(ctx, new_sim, sim_env)
    else:
        ctx.gl_ctx.make_current()
        del ctx  # robosuite's __del__ frees the MjrContext and the EGL context now
        _build_new(sim_env)
