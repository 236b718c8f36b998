"""TinyVLA adapter: tiny checkpoints in the release layout, loaded through the user's path."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import PYTHON
from vla_gym.policies.testing import observation, observation_batch
from vla_gym.policies.tinyvla import TinyVLAPolicy
from vla_gym.policies.tinyvla.loader import clean_non_lora, load_tinyvla, read_weights
from vla_gym.policies.tinyvla.make_tiny import IMAGE_SIZE, dataset_stats, write_tiny_tinyvla
from vla_gym.policies.tinyvla.processing import conv_pythia_prompt, tokenizer_image_token
from vla_gym.policies.toolkit.errors import CheckpointError
from vla_gym.policies.toolkit.safe_load import load_torch_state_dict

pytest.importorskip("diffusers")
pytest.importorskip("peft")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny_tinyvla(tmp_path_factory.mktemp("tinyvla"))


@pytest.fixture(scope="module")
def lora_policy(tiny) -> TinyVLAPolicy:
    return TinyVLAPolicy.from_pretrained(tiny["checkpoint"], model_base=tiny["base"], device="cpu")


@pytest.fixture
def damaged(tiny, tmp_path):
    """A writable copy of base/ and run/ (the LoRA layout) for tests that break a file."""
    shutil.copytree(tiny["base"], tmp_path / "base")
    shutil.copytree(tiny["run"], tmp_path / "run")
    return {"base": tmp_path / "base", "run": tmp_path / "run", "checkpoint": tmp_path / "run" / "checkpoint-8"}


def obs_batch(n: int) -> list[dict]:
    return observation_batch(n, size=IMAGE_SIZE, wrist=True)


# ---- layout ---------------------------------------------------------------------------------
def test_tiny_checkpoint_has_the_release_layout_and_names(tiny):
    ckpt = tiny["checkpoint"]
    assert {p.name for p in ckpt.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                 "non_lora_trainables.bin", "preprocessor_config.json"}
    assert {"config.json", "dataset_stats.pkl", "dataset_stats.json"} <= {p.name for p in tiny["run"].iterdir()}
    cfg = json.loads((tiny["run"] / "config.json").read_text())
    assert cfg["model_type"] == "llava_pythia" and cfg["action_head_type"] == "droid_diffusion"
    assert cfg["concat"] == "token_cat" and cfg["chunk_size"] % 4 == 0
    assert set(cfg["vision_config"]) == {"vision_tower", "mm_projector"}
    assert "mm_vision_tower" not in cfg and "action_head_type" not in json.loads((tiny["base"] / "config.json").read_text())
    non_lora = torch.load(ckpt / "non_lora_trainables.bin", weights_only=True)
    assert all(k.startswith("base_model.model.") for k in non_lora)
    assert any(".base_layer.weight" in k for k in non_lora)  # peft >= 0.7 names
    assert "base_model.model.embed_out.final_conv.1.weight" in non_lora
    base, _ = read_weights(tiny["base"])
    assert base["embed_out.weight"].shape[0] > 100  # the base VLM's vocab head under the UNet's name
    assert {"gpt_neox.mm_projector.0.weight", "gpt_neox.mm_projector.2.weight",
            "gpt_neox.vision_tower.vision_model.embeddings.patch_embedding.weight",
            "gpt_neox.vision_tower.vision_model.pre_layrnorm.weight",
            "gpt_neox.layers.1.attention.query_key_value.weight", "gpt_neox.final_layer_norm.weight"} <= set(base)
    merged, _ = read_weights(tiny["merged"])
    assert {"embed_out.norm_after_pool.weight", "embed_out.combine.weight", "embed_out.diffusion_step_encoder.1.weight",
            "embed_out.down_modules.0.0.blocks.0.block.0.weight", "embed_out.down_modules.0.0.cond_encoder.1.weight",
            "embed_out.down_modules.0.0.residual_conv.weight", "embed_out.down_modules.0.2.conv.weight",
            "embed_out.mid_modules.1.blocks.1.block.1.weight", "embed_out.up_modules.0.2.conv.weight",
            "embed_out.final_conv.0.block.0.weight"} <= set(merged)


def test_non_lora_keys_are_rewritten_as_the_original_plus_base_layer():
    t = torch.zeros(1)
    raw = {"base_model.model.gpt_neox.a.base_layer.weight": t, "base_model.model.gpt_neox.a.lora_A.weight": t,
           "base_model.model.embed_out.combine.weight": t}
    assert set(clean_non_lora(raw)) == {"gpt_neox.a.weight", "embed_out.combine.weight"}
    assert set(clean_non_lora({"model.gpt_neox.b.weight": t, "model.x": t})) == {"gpt_neox.b.weight", "x"}


# ---- LoRA merge -----------------------------------------------------------------------------
def _pooled(model, policy, obs) -> torch.Tensor:
    ids, px, _ = policy.preprocess(obs)
    with torch.no_grad():
        embeds, mask = model.splice(ids, model.encode_images(px))
        return model.pooled_hidden(embeds, mask)


def test_merged_lora_equals_peft_unmerged_forward(tiny, lora_policy):
    """Our merge (alpha/r from adapter_config.json) vs peft's own LoRA layers run unmerged."""
    from peft import LoraConfig, inject_adapter_in_model
    from safetensors.torch import load_file

    from vla_gym.policies.tinyvla.modeling import LlavaPythia
    from vla_gym.policies.tinyvla.unet import unet_kwargs_from_state

    ckpt = tiny["checkpoint"]
    base, _ = read_weights(tiny["base"])
    non_lora = clean_non_lora(load_torch_state_dict(ckpt / "non_lora_trainables.bin"))
    state = {k: v for k, v in {**base, **non_lora}.items() if k != "embed_out.weight"}
    unmerged = LlavaPythia(lora_policy.cfg, unet_kwargs_from_state(state)).eval()
    unmerged.load_state_dict(state, strict=True)
    obs = obs_batch(2)
    no_lora = _pooled(unmerged, lora_policy, obs)
    unmerged = inject_adapter_in_model(LoraConfig.from_pretrained(str(ckpt)), unmerged)
    adapter = {k[len("base_model.model."):].replace(".lora_A.weight", ".lora_A.default.weight")
               .replace(".lora_B.weight", ".lora_B.default.weight"): v
               for k, v in load_file(str(ckpt / "adapter_model.safetensors")).items()}
    result = unmerged.load_state_dict(adapter, strict=False)
    assert not result.unexpected_keys and all("lora_" not in k for k in result.missing_keys)
    unmerged.eval()
    reference = _pooled(unmerged, lora_policy, obs)
    ours = _pooled(lora_policy.model, lora_policy, obs)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    assert (reference - no_lora).abs().max() > 1e-2  # the adapter matters
    assert lora_policy.report.lora_layers == 20 and lora_policy.report.lora_scaling == 4.0


def test_lora_run_and_merged_save_give_the_same_actions(tiny, lora_policy):
    merged = TinyVLAPolicy.from_pretrained(tiny["merged"], device="cpu")
    assert merged.report.layout == "merged" and lora_policy.report.layout == "lora"
    obs = obs_batch(2)
    lora_policy.reset([0, 1], [3, 4])
    merged.reset([0, 1], [3, 4])
    np.testing.assert_allclose(lora_policy.act(obs).actions, merged.act(obs).actions, atol=1e-4)


# ---- sampling -------------------------------------------------------------------------------
def test_actions_shape_timing_and_info(lora_policy):
    lora_policy.reset([0], [0])
    chunk = lora_policy.act(obs_batch(1))
    assert chunk.actions.shape == (1, 8, 7) and chunk.actions.dtype == np.float32
    stats = dataset_stats()
    assert np.all(chunk.actions >= stats["action_min"] - 1e-6) and np.all(chunk.actions <= stats["action_max"] + 1e-6)
    assert {"preprocess", "model", "postprocess", "vision", "llm", "diffusion"} <= set(chunk.info["timing_ms"])
    assert chunk.info["num_denoise_steps"] == 10
    info = lora_policy.info()
    assert info.chunk_size == 8 and info.weight_bytes > 0 and info.dtype.startswith("float32")
    assert lora_policy.execution.mode == "temporal_ensemble" and lora_policy.inputs.image_size == IMAGE_SIZE
    assert lora_policy.inputs.cameras == ("agentview", "wrist") and lora_policy.inputs.uses_state


def test_same_seed_same_chunk_other_seed_other_chunk(lora_policy):
    obs = obs_batch(1)
    lora_policy.reset([0], [11])
    first = lora_policy.act(obs).actions
    second = lora_policy.act(obs).actions  # the generator advanced: new noise
    lora_policy.reset([0], [11])
    again = lora_policy.act(obs).actions
    lora_policy.reset([0], [12])
    other = lora_policy.act(obs).actions
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - second).max() > 1e-3 and np.abs(first - other).max() > 1e-3


def test_batch_rows_equal_single_calls(lora_policy):
    obs = obs_batch(3)  # different instructions: prompts of different lengths, right-padded in the batch
    lengths = {len(tokenizer_image_token(conv_pythia_prompt(o["instruction"]), lora_policy.tokenizer)) for o in obs}
    assert len(lengths) == 3
    lora_policy.reset([4, 5, 6], [1, 2, 3])
    batched = lora_policy.act(obs, env_ids=[4, 5, 6]).actions
    lora_policy.reset([4, 5, 6], [1, 2, 3])
    singles = [lora_policy.act([o], env_ids=[e]).actions[0] for o, e in zip(obs, [4, 5, 6])]
    np.testing.assert_allclose(batched, np.stack(singles), atol=1e-4)
    assert np.abs(batched[0] - batched[1]).max() > 1e-3  # independent samples


# ---- stats and pickles ----------------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/tinyvla_pwned",))


def test_restricted_unpickler_refuses_a_malicious_stats_pickle(damaged, tmp_path):
    from vla_gym.policies.tinyvla.convert_stats import main

    bad = damaged["run"] / "dataset_stats.pkl"
    bad.write_bytes(pickle.dumps({"action_min": _Evil()}))
    (damaged["run"] / "dataset_stats.json").unlink()
    marker = Path("/tmp/tinyvla_pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match=r"system.*not allowed"):
        TinyVLAPolicy.from_pretrained(damaged["checkpoint"], model_base=damaged["base"], device="cpu",
                                      allow_stats_pickle=True)
    assert main([str(bad), str(tmp_path / "out.json")]) == 2
    assert not marker.exists() and not (tmp_path / "out.json").exists()


def test_stats_pickle_needs_opt_in_and_converter_writes_the_twin(damaged, tmp_path):
    (damaged["run"] / "dataset_stats.json").unlink()
    with pytest.raises(CheckpointError, match="convert_stats"):
        TinyVLAPolicy.from_pretrained(damaged["checkpoint"], model_base=damaged["base"], device="cpu")
    out = tmp_path / "stats.json"
    proc = subprocess.run([PYTHON, "-m", "vla_gym.policies.tinyvla.convert_stats",
                           str(damaged["run"] / "dataset_stats.pkl"), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(out.read_text())
    for key, value in dataset_stats().items():
        np.testing.assert_array_equal(np.asarray(written[key], dtype=np.float32), value)
    policy = TinyVLAPolicy.from_pretrained(damaged["checkpoint"], model_base=damaged["base"], device="cpu",
                                           allow_stats_pickle=True)
    assert policy.stats.source.name == "dataset_stats.pkl"
    np.testing.assert_array_equal(policy.stats.action.a, dataset_stats()["action_min"].astype(np.float64))


# ---- errors name the file and the fix -------------------------------------------------------
def _load(d, **kw):
    return TinyVLAPolicy.from_pretrained(d["checkpoint"], model_base=d["base"], device="cpu", **kw)


def test_lora_checkpoint_without_model_base_is_refused(tiny):
    with pytest.raises(CheckpointError, match="model_base"):
        TinyVLAPolicy.from_pretrained(tiny["checkpoint"], device="cpu")


def test_missing_preprocessor_config_is_named(damaged):
    for d in (damaged["checkpoint"], damaged["base"]):
        (d / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        _load(damaged)


def test_chunk_size_not_multiple_of_4_is_refused(damaged):
    file = damaged["run"] / "config.json"
    cfg = json.loads(file.read_text())
    file.write_text(json.dumps({**cfg, "chunk_size": 6}))
    with pytest.raises(CheckpointError, match=r"config.json.*chunk_size=6"):
        _load(damaged)


def test_action_dims_that_disagree_are_refused(damaged):
    file = damaged["run"] / "dataset_stats.json"
    stats = json.loads(file.read_text())
    stats["action_min"], stats["action_max"] = stats["action_min"][:6], stats["action_max"][:6]
    file.write_text(json.dumps(stats))
    with pytest.raises(CheckpointError, match=r"dataset_stats.json.*6-D.*action_dim=7"):
        _load(damaged)
    file.unlink()
    cfg_file = damaged["run"] / "config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "action_dim": 10}))
    with pytest.raises(CheckpointError, match="embed_out"):
        _load(damaged)


def test_unexpected_key_is_an_error_not_swallowed(damaged):
    file = damaged["checkpoint"] / "non_lora_trainables.bin"
    state = torch.load(file, weights_only=True)
    state["base_model.model.gpt_neox.layers.0.mlp.extra.weight"] = torch.zeros(2)
    torch.save(state, file)
    with pytest.raises(CheckpointError, match=r"non_lora_trainables.bin.*mlp.extra"):
        _load(damaged)


def test_missing_head_weights_are_an_error(damaged):
    file = damaged["checkpoint"] / "non_lora_trainables.bin"
    state = {k: v for k, v in torch.load(file, weights_only=True).items() if ".final_conv." not in k}
    torch.save(state, file)
    with pytest.raises(CheckpointError, match="final_conv"):
        _load(damaged)


def test_non_tensor_pickle_in_weights_is_refused(damaged):
    file = damaged["checkpoint"] / "non_lora_trainables.bin"
    file.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError, match="weights_only"):
        _load(damaged)


def test_config_json_beside_the_adapter_or_in_the_parent(damaged):
    """The training OUTPUT dir holds config.json with the adapter; checkpoint-N dirs rely on the parent's."""
    shutil.move(damaged["run"] / "config.json", damaged["checkpoint"] / "config.json")
    assert _load(damaged).report.files[0] == str(damaged["checkpoint"] / "config.json")
    (damaged["checkpoint"] / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json with action keys"):
        _load(damaged)


def test_missing_camera_is_named(lora_policy):
    obs = observation(size=IMAGE_SIZE, wrist=False)
    with pytest.raises(KeyError, match="wrist"):
        lora_policy.act([obs])


def test_safetensors_stats_twin_given_explicitly(damaged, tmp_path):
    from vla_gym.policies.tinyvla.stats import write_stats

    stats = dataset_stats()
    stats["qpos_mean"] = stats["qpos_mean"] + 1.0  # distinguishable from the JSON twin beside the run
    file = write_stats(stats, tmp_path / "dataset_stats.safetensors")
    policy = _load(damaged, stats=file)
    assert policy.stats.source == file
    np.testing.assert_allclose(policy.stats.state.a, stats["qpos_mean"].astype(np.float64))


def test_load_report_drops_only_the_base_vocab_head(tiny):
    loaded = load_tinyvla(tiny["checkpoint"], tiny["base"])
    assert loaded.report.dropped_benign == ["model.safetensors:embed_out.weight"]


# ---- a real LIBERO rollout ------------------------------------------------------------------
def test_short_libero_rollout_with_the_tiny_lora_checkpoint(tiny, tmp_path, subprocess_env):
    out = tmp_path / "run"
    args = ["env=libero_spatial", "tasks=[0]", "policy=tinyvla", f"policy.checkpoint={tiny['checkpoint']}",
            f"policy.model_base={tiny['base']}", "policy.device=cpu", "episodes_per_task=1", "max_steps=6",
            "video.enabled=false", f"hydra.run.dir={out}"]
    proc = subprocess.run([PYTHON, "-m", "vla_gym.rollout", *args], capture_output=True, text=True,
                          env=subprocess_env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record,) = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert record["error"] is None and record["steps"] == 6
    assert record["policy_queries"] == 6  # temporal ensembling queries every step
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["policy_info"]["chunk_size"] == 8 and meta["chunk"]["mode"] == "temporal_ensemble"


# ---- action transforms ----------------------------------------------------------------------
def test_delta_rot6d_matches_robosuite_axis_angle():
    """rot6d (first two rows of R) -> axis-angle, for rotations built with the env's robosuite conversions."""
    import robosuite.utils.transform_utils as T

    from vla_gym.policies.tinyvla.actions import matrix_to_axis_angle, rot6d_to_matrix, to_env_actions

    rng = np.random.default_rng(0)
    rotvecs = rng.normal(size=(40, 3))
    rotvecs[:5] *= 1e-4  # tiny rotations
    rotvecs[5:10] *= 3.0 / np.linalg.norm(rotvecs[5:10], axis=1, keepdims=True)  # near pi
    mats = np.stack([T.quat2mat(T.axisangle2quat(v)) for v in rotvecs])
    d6 = mats[:, :2, :].reshape(-1, 6) * rng.uniform(0.5, 2.0, size=(40, 1))  # unnormalised, as a network outputs
    ref = rotvecs  # all angles < pi, so the axis-angle of each matrix is unique
    np.testing.assert_allclose(matrix_to_axis_angle(rot6d_to_matrix(d6)), ref, atol=1e-5)
    np.testing.assert_allclose(rot6d_to_matrix(d6), mats, atol=1e-6)
    # and robosuite's own inverse (float32 inside; it returns 0 below its small-angle threshold)
    back = np.stack([T.quat2axisangle(T.mat2quat(m)) for m in mats[5:]])
    np.testing.assert_allclose(matrix_to_axis_angle(rot6d_to_matrix(d6[5:])), back, atol=5e-4)
    acts = np.concatenate([rng.normal(size=(40, 3)), d6, rng.uniform(-1, 1, size=(40, 1))], axis=1)
    env = to_env_actions(acts.reshape(4, 10, 10), "delta_rot6d").reshape(40, 7)
    np.testing.assert_allclose(env[:, 3:6], ref, atol=1e-5)
    np.testing.assert_allclose(env[:, [0, 1, 2, 6]], acts[:, [0, 1, 2, 9]], atol=1e-6)


def test_action_transform_refuses_what_cannot_be_converted():
    from vla_gym.policies.tinyvla.actions import ActionTransformError, resolve_transform

    assert resolve_transform("auto", 7) == "identity"
    with pytest.raises(ActionTransformError, match="delta_rot6d"):
        resolve_transform("auto", 10)
    with pytest.raises(ActionTransformError, match="absolute"):
        resolve_transform("absolute_rot6d", 10)
    with pytest.raises(ActionTransformError, match="needs 10-D"):
        resolve_transform("delta_rot6d", 7)


# ---- quantization and file-format variants --------------------------------------------------
@pytest.fixture(scope="module")
def fp32_chunk(tiny) -> np.ndarray:
    policy = TinyVLAPolicy.from_pretrained(tiny["merged"], device="cpu")
    policy.reset([0, 1], [0, 1])
    return policy.act(obs_batch(2)).actions


# measured max |a - a_fp32| (env units) on the tiny merged checkpoint: fp16 0.0017, bf16 0.010,
# int8(bf16) 0.0064, int8(fp32) 0.0009, int4(bf16) 0.022
@pytest.mark.parametrize("quant, bound", [("fp16", 0.02), ("bf16", 0.05), ({"name": "int8", "dtype": "bf16"}, 0.05),
                                          ({"name": "int8", "dtype": "fp32"}, 0.02),
                                          ({"name": "int4", "dtype": "bf16"}, 0.1)])
def test_every_quantization_runs_and_keeps_the_head_unquantized(tiny, fp32_chunk, quant, bound):
    policy = TinyVLAPolicy.from_pretrained(tiny["merged"], device="cpu", quantization=quant)
    policy.reset([0, 1], [0, 1])
    chunk = policy.act(obs_batch(2)).actions
    assert np.isfinite(chunk).all()
    err = np.abs(chunk - fp32_chunk).max()
    assert 0 < err < bound, err
    head = [type(p).__name__ for p in policy.model.embed_out.parameters()]
    assert set(head) == {"Parameter"}  # no quanto / bitsandbytes tensors in the UNet
    name = quant if isinstance(quant, str) else quant["name"]
    info = policy.info()
    storage = {"fp16": "float16", "bf16": "bfloat16", "int8": "int8", "int4": "int4"}[name]
    assert info.quantization == name and storage in info.dtype.split("+")
    if name in ("int8", "int4"):
        assert "QBytes" in type(policy.model.gpt_neox.layers[0].mlp.dense_h_to_4h.weight).__name__ or \
            "QBits" in type(policy.model.gpt_neox.layers[0].mlp.dense_h_to_4h.weight).__name__


def test_bin_weight_files_load_like_safetensors(damaged):
    """pytorch_model.bin base weights and a peft adapter_model.bin (older peft), weights-only."""
    from safetensors.torch import load_file

    base = damaged["base"] / "model.safetensors"
    torch.save(load_file(str(base)), damaged["base"] / "pytorch_model.bin")
    base.unlink()
    adapter = damaged["checkpoint"] / "adapter_model.safetensors"
    torch.save(load_file(str(adapter)), damaged["checkpoint"] / "adapter_model.bin")
    adapter.unlink()
    policy = _load(damaged)
    assert any(f.endswith("pytorch_model.bin") for f in policy.report.files)
    assert any(f.endswith("adapter_model.bin") for f in policy.report.files) and policy.report.lora_layers == 20
