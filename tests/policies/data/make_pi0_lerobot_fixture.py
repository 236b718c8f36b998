"""Produce ``pi0_lerobot_reference.json`` and ``pi0_lerobot_pipeline/`` by running LeRobot's own processors.

Runs LeRobot 0.6.1's ``make_default_policy_processor_steps`` (normaliser / unnormaliser),
``Pi05PrepareStateTokenizerProcessorStep``, ``Pi0NewLineProcessor`` and ``PolicyProcessorPipeline``
(``save_pretrained``) unmodified, in the throwaway venv of ``pi0_make_reference_fixture.py``
(``/tmp/lrvenv``: lerobot 0.6.1, transformers 5.5.4, torch 2.14.1). The only omission is the
``TokenizerProcessorStep`` (it downloads the gated ``google/paligemma-3b-pt-224``): the pipelines
are LeRobot's pi0.5 pre/post-processor step lists without it, so the normaliser keeps its index 3.

    /tmp/lrvenv/bin/python make_pi0_lerobot_fixture.py
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import torch
from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.policies.pi0.processor_pi0 import Pi0NewLineProcessor
from lerobot.policies.pi05.configuration_pi05 import PI05Config
from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep
from lerobot.processor import (
    AbsoluteActionsProcessorStep,
    PolicyProcessorPipeline,
    RelativeActionsProcessorStep,
    make_default_policy_processor_steps,
)
from lerobot.processor.converters import (
    create_transition,
    policy_action_to_transition,
    transition_to_policy_action,
)
from lerobot.lerobot_types import TransitionKey

HERE = pathlib.Path(__file__).parent
TASKS = ["pick_up the black bowl\n", "  open the top drawer of the cabinet"]


def stats(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for key, dim in (("observation.state", 8), ("action", 7)):
        mean, std = rng.normal(0, 1, dim), rng.uniform(0.05, 0.5, dim)
        q01, q99 = mean - 2 * std, mean + 2 * std
        q99[1] = q01[1]  # a constant dimension: LeRobot substitutes eps for the zero width
        out[key] = {"mean": mean, "std": std, "q01": q01, "q99": q99, "min": mean - 3 * std, "max": mean + 3 * std}
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    dataset_stats = stats(rng)
    state = torch.tensor(dataset_stats["observation.state"]["mean"] + rng.normal(0, 0.6, (2, 8)), dtype=torch.float32)
    model_actions = torch.tensor(rng.normal(0, 1.2, (2, 5, 7)), dtype=torch.float32)
    out: dict[str, object] = {"stats": {k: {s: v.tolist() for s, v in d.items()} for k, d in dataset_stats.items()},
                              "state": state.tolist(), "model_actions": model_actions.tolist(), "modes": {}}
    for mode in ("MEAN_STD", "QUANTILES"):
        cfg = PI05Config(
            input_features={"observation.images.image": PolicyFeature(FeatureType.VISUAL, (3, 256, 256)),
                            "observation.images.image2": PolicyFeature(FeatureType.VISUAL, (3, 256, 256)),
                            "observation.state": PolicyFeature(FeatureType.STATE, (8,))},
            output_features={"action": PolicyFeature(FeatureType.ACTION, (7,))},
            normalization_mapping={"VISUAL": NormalizationMode.IDENTITY, "STATE": NormalizationMode(mode),
                                   "ACTION": NormalizationMode(mode)},
            empty_cameras=1, device="cpu",
        )
        cfg.validate_features()
        steps = make_default_policy_processor_steps(cfg, dataset_stats)
        relative = RelativeActionsProcessorStep(enabled=False)
        prepare = Pi05PrepareStateTokenizerProcessorStep(max_state_dim=32)
        pre = PolicyProcessorPipeline(steps=[steps.rename_observations, steps.add_batch_dim, relative, steps.normalize,
                                             prepare, steps.to_device], name="policy_preprocessor")
        post = PolicyProcessorPipeline(
            steps=[steps.unnormalize, AbsoluteActionsProcessorStep(enabled=False, relative_step=relative),
                   steps.to_cpu],
            name="policy_postprocessor", to_transition=policy_action_to_transition,
            to_output=transition_to_policy_action)
        transition = create_transition(observation={"observation.state": state.clone()},
                                       complementary_data={"task": list(TASKS)})
        processed = pre._forward(transition)
        actions = post(model_actions.clone())
        out["modes"][mode] = {
            "normalized_state": processed[TransitionKey.OBSERVATION]["observation.state"].tolist(),
            "pi05_prompts": processed[TransitionKey.COMPLEMENTARY_DATA]["task"],
            "unnormalized_actions": actions.tolist(),
        }
        if mode == "QUANTILES":
            target = HERE / "pi0_lerobot_pipeline"
            shutil.rmtree(target, ignore_errors=True)
            pre.save_pretrained(target)
            post.save_pretrained(target)
    newline = Pi0NewLineProcessor()
    out["pi0_tasks"] = newline.complementary_data({"task": list(TASKS)})["task"]
    (HERE / "pi0_lerobot_reference.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
