"""Produce ``pi0_lerobot_policy_reference.npz``: LeRobot's own loading and inference of the tiny LeRobot dirs.

For the tiny LeRobot-layout checkpoints ``python -m vla_gym.policies.pi0.make_tiny DIR --layout lerobot
--variant pi0|pi05`` writes (seed 0; sha256 stored, checked by the test), LeRobot 0.6.1 itself:

- loads the dir: ``PI0Policy`` / ``PI05Policy.from_pretrained`` (draccus ``config.json``, LeRobot's key
  fixes of ``model.safetensors``) and both ``PolicyProcessorPipeline.from_pretrained`` pipelines
  (``policy_preprocessor.json`` / ``policy_postprocessor.json`` and their normaliser state files);
- runs ``preprocessor -> predict_action_chunk(noise=...) -> postprocessor`` on the images openpi's
  LIBERO client makes (``raw[::-1, ::-1]`` = LeRobot's ``LiberoProcessorStep`` flip, then PIL
  ``resize_with_pad`` to 224, as ``[0, 1]`` floats; LeRobot's own torch resize is then not reached),
  the 8-D state and the task.

Substituted: the sizes (as ``pi0_make_reference_fixture.py``: tiny Gemma dims, a tiny SigLIP of width 32,
patch 56 at 224 px, the 400-piece vocabulary), and the tokenizer object handed to
``tokenizer_processor`` (``overrides``): the gated ``google/paligemma-3b-pt-224`` cannot be fetched, so a
call-compatible wrapper encodes with the tiny SentencePiece model by the HF PaliGemma tokenizer's rule
(BOS, then the text; right padding with id 0 to ``max_length``; truncation). Venv: ``/tmp/lrvenv`` of
``pi0_make_reference_fixture.py`` plus ``sentencepiece``::

    /tmp/lrvenv/bin/python make_pi0_lerobot_policy_fixture.py CKPT_PI0 CKPT_PI05
"""

from __future__ import annotations

import hashlib
import pathlib
import sys

import numpy as np
import torch
from PIL import Image

HERE = pathlib.Path(__file__).parent
VOCAB = 400
TINY = {"gemma_2b": dict(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8),
        "gemma_300m": dict(width=16, depth=2, mlp_dim=32, num_heads=8, num_kv_heads=1, head_dim=8)}
SEEDS = (5, 6)
TASKS = ("put the cream cheese in the bowl", "turn_on the stove and put the moka pot on it")


def _tiny_paligemma(real_cls):
    def build(config):
        v = config.vision_config
        v.hidden_size, v.num_hidden_layers, v.num_attention_heads = 32, 2, 16
        v.intermediate_size, v.patch_size, v.image_size = 48, 56, 224
        v.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = VOCAB
        config._vocab_size = VOCAB  # noqa: SLF001
        config.image_token_index = VOCAB
        return real_cls(config=config)

    return build


def _tiny_expert(real_cls):
    def build(config):
        config.vocab_size = VOCAB
        return real_cls(config=config)

    return build


def patch_sizes() -> None:
    """LeRobot hard-codes the real sizes; give its builders the tiny ones (computation untouched)."""
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    for module in (modeling_pi0, modeling_pi05):
        module.get_gemma_config = lambda variant, m=module: m.GemmaConfig(**TINY[variant])
        module.PaliGemmaForConditionalGenerationWithPiGemma = _tiny_paligemma(
            module.PaliGemmaForConditionalGenerationWithPiGemma)
        module.PiGemmaForCausalLM = _tiny_expert(module.PiGemmaForCausalLM)


class SentencePieceAsHF:
    """The call LeRobot's tokenizer step makes, answered as the HF PaliGemma tokenizer would."""

    def __init__(self, model_file: pathlib.Path) -> None:
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))

    def __call__(self, text, max_length, truncation, padding, padding_side, return_tensors):
        assert padding == "max_length" and padding_side == "right" and return_tensors == "pt"
        texts = [text] if isinstance(text, str) else list(text)
        ids = torch.zeros((len(texts), max_length), dtype=torch.long)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)
        for row, t in enumerate(texts):
            tokens = self.sp.encode(t, add_bos=True)
            tokens = tokens[:max_length] if truncation else tokens
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def processor_pipelines(ckpt: pathlib.Path):
    """LeRobot's own ``policy_preprocessor`` / ``policy_postprocessor`` of a dir, on the CPU, with the tiny tokenizer."""
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

    device = {"device_processor": {"device": "cpu"}}
    pre = PolicyProcessorPipeline.from_pretrained(
        str(ckpt), config_filename="policy_preprocessor.json",
        overrides={"tokenizer_processor": {"tokenizer": SentencePieceAsHF(ckpt / "paligemma_tokenizer.model")},
                   **device})
    post = PolicyProcessorPipeline.from_pretrained(
        str(ckpt), config_filename="policy_postprocessor.json", overrides=device,
        to_transition=policy_action_to_transition, to_output=transition_to_policy_action)
    return pre, post


def frames(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two raw (bottom-up) 256x256 asymmetric frames, agentview and wrist (the test rebuilds them)."""
    y, x = np.mgrid[0:256, 0:256].astype(np.float64)
    base = np.stack([y, x, 127 + 100 * np.cos((2 * x + y) / (7.0 + seed))], axis=-1)
    base[100:140, 20 + seed:200] = [20, 200, 90]
    agent = np.clip(base, 0, 255).astype(np.uint8)
    wrist = np.clip(base[:, ::-1] * 0.6 + 50 + 30 * np.sin(y / (4.0 + seed))[..., None], 0, 255).astype(np.uint8)
    return agent, wrist


def client_image(raw: np.ndarray) -> torch.Tensor:
    """openpi client: turn, PIL resize-with-pad (a 256 square -> 224, no padding); as LeRobot's [0, 1] CHW."""
    turned = Image.fromarray(np.ascontiguousarray(raw[::-1, ::-1]))
    img = np.array(turned.resize((224, 224), resample=Image.BILINEAR))
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def main(ckpt_pi0: str, ckpt_pi05: str) -> None:
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    patch_sizes()
    torch.set_float32_matmul_precision("highest")
    out: dict[str, np.ndarray] = {}
    for i, seed in enumerate(SEEDS):
        agent, wrist = frames(seed)
        out[f"frames_sha256_{i}"] = np.array(hashlib.sha256(agent.tobytes() + wrist.tobytes()).hexdigest())
        out[f"state_{i}"] = np.array([0.02, -0.03, 1.05, 3.0, 0.2, -0.05, 0.035, -0.035]) + 0.04 * i
        out[f"task_{i}"], out[f"seed_{i}"] = np.array(TASKS[i]), np.array(seed)
    for name, ckpt, cls in (("pi0", ckpt_pi0, modeling_pi0.PI0Policy), ("pi05", ckpt_pi05, modeling_pi05.PI05Policy)):
        ckpt = pathlib.Path(ckpt)
        out[f"sha256_{name}"] = np.array(hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest())
        policy = cls.from_pretrained(str(ckpt)).eval()
        pre, post = processor_pipelines(ckpt)
        horizon = policy.config.chunk_size
        for i, seed in enumerate(SEEDS):
            agent, wrist = frames(seed)
            batch = {"observation.images.image": client_image(agent), "observation.images.image2": client_image(wrist),
                     "observation.state": torch.tensor(out[f"state_{i}"], dtype=torch.float32)[None],
                     "task": [TASKS[i]]}
            batch = pre(batch)
            noise = torch.randn((horizon, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
            with torch.no_grad():
                actions = policy.predict_action_chunk(batch, noise=noise[None])
            out[f"{name}_fp32_{i}"] = post(actions)[0].numpy()
    np.savez_compressed(HERE / "pi0_lerobot_policy_reference.npz", **out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
