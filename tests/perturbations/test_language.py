"""Language paraphrases: deterministic per seed, in obs and info, rules cover LIBERO templates."""

from __future__ import annotations

import numpy as np
import pytest

from tests.perturbations.conftest import make_lift
from vla_gym import perturbations as P
from vla_gym.perturbations.language import paraphrase


def test_instruction_is_replaced_in_obs_and_info_for_the_whole_episode():
    env = P.LanguagePerturbation(make_lift(cameras=()), strength=1.0)
    try:
        obs, info = env.reset(seed=5)
        new = obs["instruction"]
        assert new != "pick up the red cube" and info["instruction"] == new
        obs, _, _, _, info = env.step(np.zeros(7, dtype=np.float32))
        assert obs["instruction"] == new == info["instruction"]
        again, _ = env.reset(seed=5)
        assert again["instruction"] == new
        texts = {env.reset(seed=s)[0]["instruction"] for s in range(8)}
        assert len(texts) > 2
    finally:
        env.close()


@pytest.mark.parametrize("text,expected", [
    ("pick up the black bowl next to the ramekin and place it on the plate",
     r"^(put|place|set|move) the black bowl next to the ramekin on the plate$"),
    ("open the top drawer and put the bowl inside", r"(first .*, then|after you)"),
])
def test_rules_rewrite_libero_templates(text, expected):
    import re

    rng = np.random.default_rng(0)
    from vla_gym.perturbations.language import rule_merge, rule_reorder

    out = (rule_merge(text, rng) or rule_reorder(text, rng))
    assert re.search(expected, out), out


def test_paraphrase_strength_zero_is_identity_and_seeded():
    text = "turn on the stove and put the moka pot on it"
    assert paraphrase(text, 0.0, np.random.default_rng(1)) == text
    assert paraphrase(text, 1.0, np.random.default_rng(1)) == paraphrase(text, 1.0, np.random.default_rng(1))
    assert paraphrase(text, 1.0, np.random.default_rng(1)) != text


def test_hand_written_paraphrases_take_precedence():
    env = P.LanguagePerturbation(make_lift(cameras=()), strength=1.0,
                                 paraphrases={"pick up the red cube": ["lift the crimson block"]})
    try:
        assert env.reset(seed=0)[0]["instruction"] == "lift the crimson block"
    finally:
        env.close()
