"""Language perturbation: rule-based paraphrases of the instruction (LIBERO-plus "language").

Rules are written for LIBERO's templated instructions ("pick up X and place it on Y",
"put X on Y", "open/close/turn on ...") and robosuite's, so all 130 LIBERO tasks get
paraphrases without hand lists. Each rule fires with probability ``strength``:

1. merge: "pick [up] X and place|put it P Y" -> "{put|place|move} X P Y";
2. reorder: "A and V ..." (V a verb) -> "first A, then V ..." or "V ... after you A"
   (only the first form when A contains "it");
3. synonyms: "pick [up]" -> grab/take(/lift), "place" <-> "put"/"set", "on top of" -> "onto",
   "turn on/off" -> "switch on/off", "open" -> "pull open", "close" -> "shut",
   "push" -> "slide", "stack" -> "pile";
4. framing: "please {}", "{}, please", "could you {}?", "robot, {}", "your task is to {}",
   "i need you to {}", "now {}".
"""

from __future__ import annotations

import re
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from vla_gym.perturbations._common import check_strength, episode_rng, episode_seed

VERBS = ("pick up", "pick", "place", "put", "open", "close", "turn on", "turn off", "push", "stack", "lift", "fit")
SYNONYMS: dict[str, tuple[str, ...]] = {
    "pick up": ("grab", "take", "lift"),
    "pick": ("grab", "take"),
    "place": ("put", "set"),
    "put": ("place", "set"),
    "on top of": ("onto", "on the top of"),
    "turn on": ("switch on",),
    "turn off": ("switch off",),
    "open": ("pull open",),
    "close": ("shut",),
    "push": ("slide",),
    "stack": ("pile",),
}
FRAMES = ("please {}", "{}, please", "could you {}?", "robot, {}", "your task is to {}", "i need you to {}",
          "now {}")

_MERGE = re.compile(r"^pick (?:up )?(?P<obj>.+?) and (?:place|put) (?:it|them) (?P<rest>(?:on|in|into|onto|to|under|"
                    r"at)\b.*)$")
_AND_VERB = re.compile(r"^(?P<a>.+?) and (?P<b>(?:" + "|".join(VERBS) + r")\b.*)$")


def rule_merge(text: str, rng: np.random.Generator) -> str | None:
    """'pick up X and place it on Y' -> 'put X on Y'."""
    m = _MERGE.match(text)
    if not m:
        return None
    verb = ("put", "place", "move")[rng.integers(3)]
    return f"{verb} {m['obj']} {m['rest']}"


def rule_reorder(text: str, rng: np.random.Generator) -> str | None:
    """'A and B' -> 'first A, then B' or 'B after you A'."""
    m = _AND_VERB.match(text)
    if not m:
        return None
    a, b = m["a"], m["b"]
    if re.search(r"\b(it|them)\b", b) or rng.random() < 0.5:
        return f"first {a}, then {b}"
    return f"{b} after you {a}"


def rule_synonyms(text: str, rng: np.random.Generator) -> str | None:
    """Swap verbs and prepositions for synonyms (one pass, longest phrases first)."""
    keys = sorted(SYNONYMS, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in keys) + r")\b")
    choice = {k: SYNONYMS[k][rng.integers(len(SYNONYMS[k]))] for k in keys}
    out = pattern.sub(lambda m: choice[m.group(1)], text)
    return out if out != text else None


def rule_frame(text: str, rng: np.random.Generator) -> str | None:
    """Wrap the instruction in a conversational frame."""
    return FRAMES[rng.integers(len(FRAMES))].format(text)


RULES: tuple[Callable[[str, np.random.Generator], str | None], ...] = (
    rule_merge, rule_reorder, rule_synonyms, rule_frame)


def paraphrase(instruction: str, strength: float, rng: np.random.Generator) -> str:
    """Apply each rule with probability ``strength`` (draws are made for every rule)."""
    text = " ".join(instruction.strip().split())
    for rule in RULES:
        fire = rng.random() < strength
        sub_rng = np.random.default_rng(rng.integers(2**31))
        if fire:
            text = rule(text, sub_rng) or text
    return text if text != " ".join(instruction.strip().split()) else instruction


class LanguagePerturbation(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replace the instruction in ``obs["instruction"]`` and ``info["instruction"]`` per episode.

    The paraphrase is drawn at reset from the episode seed and kept for the whole episode.
    With ``paraphrases`` (original instruction -> list of alternatives), one alternative is
    used with probability ``strength`` instead of the rules (LIBERO-PRO's ``_lan`` suites hold
    human-written ones: ``perturbation=libero_pro_lan``).

    Args:
        env: An env whose observations hold ``obs["instruction"]``.
        strength: In [0, 1]; probability that each rewrite rule fires. 0 = the original.
        paraphrases: Optional hand-written alternatives per original instruction.

    Examples:
        >>> import gymnasium as gym, vla_gym
        >>> from vla_gym.perturbations import LanguagePerturbation
        >>> env = LanguagePerturbation(gym.make("vla_gym/RobosuiteLift-v1", image_size=64), strength=1.0)
        >>> obs, info = env.reset(seed=0)
        >>> obs["instruction"] != "pick up the red cube" and obs["instruction"] == info["instruction"]
        True
        >>> env.close()
    """

    salt = "language"

    def __init__(self, env: gym.Env, strength: float, paraphrases: dict[str, list[str]] | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, strength=strength, paraphrases=paraphrases)
        gym.Wrapper.__init__(self, env)
        self.strength = check_strength(strength)
        self.paraphrases = {k: list(v) for k, v in (paraphrases or {}).items()}
        for k, v in self.paraphrases.items():
            if not v:
                raise ValueError(f"paraphrases[{k!r}] is empty; give at least one alternative or drop the key")
        self.original: str | None = None
        self.instruction: str | None = None

    def _choose(self, original: str, rng: np.random.Generator) -> str:
        if self.strength == 0:
            return original
        if original in self.paraphrases:
            alts = self.paraphrases[original]
            return alts[rng.integers(len(alts))] if rng.random() < self.strength else original
        return paraphrase(original, self.strength, rng)

    def _patch(self, obs: dict[str, Any], info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        if self.instruction == self.original:
            return obs, info
        obs = {**obs, "instruction": self.instruction}
        if "instruction" in info:
            info = {**info, "instruction": self.instruction}
        return obs, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset, then draw this episode's instruction."""
        obs, info = self.env.reset(seed=seed, options=options)
        self.original = obs["instruction"]
        self.instruction = self._choose(self.original, episode_rng(episode_seed(self.env, seed), self.salt))
        return self._patch(obs, info)

    def step(self, action: Any):
        """Step, keeping this episode's instruction in obs and info."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._patch(obs, info)
        return obs, reward, terminated, truncated, info
