"""The prompt formats of pi0 / pi0.5 checkpoints, as data.

Which format a checkpoint was trained with is a fact about its training recipe, not a user
choice: :func:`check_prompt_format` refuses a configured format that disagrees with the one
the checkpoint implies (:mod:`vla_gym.policies.pi0.config` picks it).

- ``pi0`` (openpi ``PaligemmaTokenizer.tokenize(prompt, state=None)``, ``pi0_libero``):
  ``encode(clean(task), add_bos=True) + encode("\\n")``.
- ``pi05_libero`` (openpi ``pi05_libero``: ``discrete_state_input=False``): the same text as
  ``pi0`` -- the released model sees no state at all -- with the pi0.5 token budget (200).
- ``pi05_state`` (openpi pi0.5 with ``discrete_state_input=True`` and LeRobot's
  ``Pi05PrepareStateTokenizerProcessorStep``): ``"Task: {clean(task)}, State: {bins};\\nAction: "``
  with the normalised, unpadded state discretised into 256 bins over [-1, 1].
- ``lerobot_pi0`` (LeRobot ``Pi0NewLineProcessor`` + its tokenizer step): ``task + "\\n"``
  (newline added only if missing), encoded in one piece with BOS, no cleaning.

``clean`` is openpi's ``prompt.strip().replace("_", " ").replace("\\n", " ")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATE_BINS = 256


@dataclass(frozen=True)
class PromptFormat:
    """How one recipe turns (task, state) into text pieces for the tokenizer.

    Attributes:
        name: Format name (``pi0``, ``pi05_libero``, ``pi05_state``, ``lerobot_pi0``).
        template: Text of the first piece; ``{task}`` and (if ``uses_state``) ``{state}`` are filled in.
        clean: Apply openpi's cleaning to the task first.
        uses_state: The discretised state is part of the text.
        separate_newline: ``"\\n"`` is encoded on its own and appended (openpi's pi0 rule).
        newline_if_missing: Append ``"\\n"`` to the text unless it already ends with one (LeRobot pi0).
    """

    name: str
    template: str
    clean: bool
    uses_state: bool = False
    separate_newline: bool = False
    newline_if_missing: bool = False

    def pieces(self, task: str, state: np.ndarray | None = None) -> list[str]:
        """The strings to encode, in order; only the first gets BOS."""
        text = clean_task(task) if self.clean else str(task)
        fields = {"task": text}
        if self.uses_state:
            if state is None:
                raise ValueError(f"prompt format {self.name!r} puts the state in the prompt; no state given")
            fields["state"] = " ".join(map(str, discretize_state(state)))
        first = self.template.format(**fields)
        if self.newline_if_missing and not first.endswith("\n"):
            first += "\n"
        return [first, "\n"] if self.separate_newline else [first]


PROMPT_FORMATS: dict[str, PromptFormat] = {
    "pi0": PromptFormat("pi0", "{task}", clean=True, separate_newline=True),
    "pi05_libero": PromptFormat("pi05_libero", "{task}", clean=True, separate_newline=True),
    "pi05_state": PromptFormat("pi05_state", "Task: {task}, State: {state};\nAction: ", clean=True,
                               uses_state=True),
    "lerobot_pi0": PromptFormat("lerobot_pi0", "{task}", clean=False, newline_if_missing=True),
}


def clean_task(task: str) -> str:
    """openpi's cleaning: strip, underscores and newlines to spaces."""
    return str(task).strip().replace("_", " ").replace("\n", " ")


def discretize_state(state: np.ndarray) -> np.ndarray:
    """openpi's 256-bin discretisation of a normalised state: ``digitize(s, linspace(-1, 1, 257)[:-1]) - 1``.

    Values below -1 give -1 and values at or above 1 - 2/256 give 255, exactly as the reference
    (no clipping: the reference does not clip either).
    """
    bins = np.linspace(-1, 1, STATE_BINS + 1)[:-1]
    return np.digitize(np.asarray(state), bins=bins) - 1


def get_prompt_format(name: str) -> PromptFormat:
    """A format by name; unknown names list the valid ones."""
    try:
        return PROMPT_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown prompt format {name!r}; valid: {sorted(PROMPT_FORMATS)}") from None


def check_prompt_format(configured: str | None, implied: str, source: str) -> PromptFormat:
    """The checkpoint's format; a configured format that disagrees is an error (not an override)."""
    fmt = get_prompt_format(implied)
    if configured is not None and configured != implied:
        get_prompt_format(configured)
        raise ValueError(
            f"prompt_format={configured!r} but {source} was trained with the {implied!r} prompt format; "
            f"a model fed another format than its training one silently degrades. Set policy.prompt_format "
            f"to null (or {implied!r})."
        )
    return fmt
