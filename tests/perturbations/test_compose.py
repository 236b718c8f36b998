"""Stacking wrappers composes their effects; model edits from several wrappers stack and undo."""

from __future__ import annotations

import numpy as np

from tests.perturbations.conftest import make_lift, rollout
from vla_gym import perturbations as P


def test_two_wrappers_compose(reference):
    env = P.LanguagePerturbation(P.LightingPerturbation(make_lift(), strength=1.0), strength=1.0)
    lit_only = P.LightingPerturbation(make_lift(), strength=1.0)
    try:
        both = rollout(env, n_steps=1)
        lit = rollout(lit_only, n_steps=1)
    finally:
        env.close()
        lit_only.close()
    np.testing.assert_array_equal(both[0]["img/agentview"], lit[0]["img/agentview"])
    assert both[0]["instruction"] != reference[0]["instruction"]
    np.testing.assert_array_equal(both[1]["state"], reference[1]["state"])


def test_stacked_model_edits_on_one_array_are_undone_every_episode():
    env = P.DynamicsPerturbation(P.DynamicsPerturbation(make_lift(cameras=()), strength=0.0, friction_scale=2.0),
                                 strength=0.0, friction_scale=3.0)
    try:
        model = env.unwrapped.sim_env.sim.model._model
        nominal = model.geom_friction.copy()
        for seed in range(3):
            env.reset(seed=seed)
            np.testing.assert_allclose(model.geom_friction, 6.0 * nominal)
    finally:
        env.close()
