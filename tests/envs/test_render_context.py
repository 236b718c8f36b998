"""The render context kept across LIBERO's hard resets: same pixels, rebuilt whenever an asset differs."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from vla_gym.envs.render_context import same_render_inputs

XML = """<mujoco>
  <visual><quality offsamples="{samples}"/></visual>
  <asset><texture name="t" type="2d" builtin="checker" rgb1="{rgb}" rgb2="0 0 0" width="8" height="8"/>
         <material name="m" texture="t"/></asset>
  <worldbody><geom type="box" pos="-2 -2 0" size=".1 .1 .1"/><geom type="box" pos="2 2 1" size=".1 .1 .1"/>
    <body name="fixture" pos="{pos}"><geom type="box" size=".1 .1 .1" material="m" rgba="{rgba}"/>
      <site name="s" rgba="{site}"/></body>
  </worldbody>
</mujoco>"""
BASE = dict(samples=4, rgb="1 1 1", pos="0 0 0", rgba="1 1 1 1", site="1 0 0 1")


def model(**changes: str | int) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(XML.format(**{**BASE, **changes}))


def test_only_what_each_frame_reads_may_differ():
    assert same_render_inputs(model(), model())
    assert same_render_inputs(model(), model(pos="0.3 -0.1 0.2"))  # what a LIBERO reset re-samples
    assert same_render_inputs(model(), model(site="1 0 0 0"))  # what robosuite's visualize() toggles
    assert not same_render_inputs(model(), model(rgb="1 0 0"))  # a texture
    assert not same_render_inputs(model(), model(rgba="1 0 0 1"))  # a geom colour
    assert not same_render_inputs(model(), model(samples=0))  # vis: the MSAA sample count


def _frames(env, episodes):
    out, contexts = [], []
    for e in episodes:
        obs, _ = env.reset(seed=e, options={"init_state_id": e})
        step, *_ = env.step(np.zeros(7, np.float32))
        out.append((obs["images"]["agentview"], step["images"]["wrist"]))
        contexts.append(env.unwrapped.sim_env.sim._render_context_offscreen.con)
    return out, contexts


@pytest.mark.parametrize("perturb", [False, True])
def test_kept_context_renders_what_a_new_one_renders(perturb):
    """Frames equal an env that rebuilds its context every reset, as LIBERO does; a changed asset forces a rebuild."""
    make = dict(task=0, cameras=("agentview", "wrist"), image_size=128)
    kept = gym.make("vla_gym/LiberoSpatial-v1", **make)
    fresh = None
    try:
        first, ctx_first = _frames(kept, [0])
        if perturb:  # e.g. a lighting/colour perturbation edited the live model during the episode
            kept.unwrapped.sim_env.sim.model.mat_rgba[0, 0] *= 0.5
        got, ctx_got = _frames(kept, [1, 2])
        fresh = gym.make("vla_gym/LiberoSpatial-v1", reuse_render_context=False, **make)
        want, ctx_want = _frames(fresh, [0, 1, 2])
        # back to the first env after another one's contexts came and went: rebuilt, still right
        again, ctx_again = _frames(kept, [0])
        for (a, w), (b, x) in zip(first + got + again, want + want[:1]):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(w, x)
        kept_ids = {id(c) for c in ctx_first + ctx_got}
        assert len(kept_ids) == (2 if perturb else 1)  # rebuilt once after the edit, kept otherwise
        assert len({id(c) for c in ctx_want}) == 3  # the opt-out builds a new one every reset
        assert id(ctx_again[0]) not in kept_ids
    finally:
        kept.close()
        if fresh is not None:
            fresh.close()
