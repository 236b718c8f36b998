"""Produce ``pi0_openpi_reference.json`` by running openpi's own tokenizer and normalisation code.

Runs ``openpi.models.tokenizer.PaligemmaTokenizer.tokenize`` and ``openpi.transforms.Normalize`` /
``Unnormalize`` unmodified (Physical-Intelligence/openpi @ 15a9616, ``src/`` on ``sys.path``) in a
throwaway venv: ``pip install torch==2.14.1 torchvision==0.29.1``, then ``jax flax numpydantic
pydantic jaxtyping==0.2.36 beartype==0.19.0 sentencepiece openpi-client einops "numpy<2"``
(openpi's pins for jaxtyping/beartype; ``array_typing`` imports torch). Only imports the two code paths never reach are stubbed: ``orbax``,
``transformers`` (FAST tokenizer), ``openpi.models.utils(.fsq_tokenizer)``, and
``openpi.shared.download.maybe_download``, which returns the tiny SentencePiece model
``pi0_tiny_tokenizer.model`` (written by ``vla_gym.policies.pi0.make_tiny.train_tokenizer``)
instead of fetching ``gs://big_vision/paligemma_tokenizer.model``.

    python make_pi0_openpi_fixture.py /path/to/openpi
"""

from __future__ import annotations

import json
import pathlib
import sys
import types

import numpy as np

HERE = pathlib.Path(__file__).parent
TOKENIZER = HERE / "pi0_tiny_tokenizer.model"

PROMPTS = [
    "Pick up the black bowl between the plate and the ramekin and place it on the plate",
    "  open_the top drawer\nof the cabinet ",
    "turn on the stove and put the moka pot on it " * 3,  # > 48 tokens: truncated
]
STATES = [
    [-1.2, -1.0, -0.99, 0.0, 0.5, 0.999, 1.0, 1.3],
    [0.1, -0.25, 0.7, -0.6, 0.33, -0.01, 0.9921875, -0.9921875],
]


def _stub(name: str, **attrs: object) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def main(openpi: str) -> None:
    sys.path.insert(0, str(pathlib.Path(openpi) / "src"))
    _stub("orbax")
    _stub("orbax.checkpoint")
    _stub("transformers", AutoProcessor=None)
    _stub("openpi.models.utils")
    _stub("openpi.models.utils.fsq_tokenizer")
    import openpi.shared  # noqa: F401  (the real package; only its download module is stubbed)

    _stub("openpi.shared.download", maybe_download=lambda *a, **k: TOKENIZER)
    from openpi import transforms
    from openpi.models import tokenizer as tk
    from openpi.shared import normalize

    out: dict[str, list] = {"tokenize": [], "normalize": []}
    for max_len in (48, 200):
        tok = tk.PaligemmaTokenizer(max_len)
        for prompt in PROMPTS:
            for state in [None, *STATES]:
                ids, mask = tok.tokenize(prompt, None if state is None else np.asarray(state))
                out["tokenize"].append({"prompt": prompt, "state": state, "max_len": max_len,
                                        "ids": np.asarray(ids).astype(int).tolist(),
                                        "mask": np.asarray(mask).astype(bool).tolist()})

    rng = np.random.default_rng(0)
    mean, std = rng.normal(0, 1, 8), rng.uniform(0.05, 0.5, 8)
    q01, q99 = mean - 2 * std, mean + 2 * std
    amean, astd = rng.normal(0, 0.1, 7), rng.uniform(0.1, 0.5, 7)
    stats = {"state": normalize.NormStats(mean=mean, std=std, q01=q01, q99=q99),
             "actions": normalize.NormStats(mean=amean, std=astd, q01=amean - 2 * astd, q99=amean + 2 * astd)}
    state = mean + std * rng.normal(0, 2.5, (4, 8))  # some beyond q01/q99
    actions = rng.normal(0, 1.5, (4, 32))  # the model's padded output
    for quantiles in (False, True):
        normed = transforms.Normalize(stats, use_quantiles=quantiles)({"state": state.copy()})["state"]
        unnormed = transforms.Unnormalize(stats, use_quantiles=quantiles)(
            {"state": normed.copy(), "actions": actions.copy()})["actions"]
        out["normalize"].append({"use_quantiles": quantiles, "state": state.tolist(), "normalized": normed.tolist(),
                                 "model_actions": actions.tolist(), "unnormalized": unnormed.tolist()})
    out["stats"] = {k: {f: np.asarray(getattr(v, f)).tolist() for f in ("mean", "std", "q01", "q99")}
                    for k, v in stats.items()}
    (HERE / "pi0_openpi_reference.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
