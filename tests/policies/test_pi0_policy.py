"""Pi0Policy end to end on tiny random checkpoints of both layouts, loaded through the user's path.

The network runs for real (tiny, random); what is checked here is the policy around it: loading
through ``from_pretrained``, per-env seeded noise, batch rows equal to single calls, which inputs
each recipe reads, the reference precision, every quantization option, the chunk-execution
defaults, and a short LIBERO rollout per layout through the runner.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import PYTHON
from vla_gym.envs.contract import upright
from vla_gym.policies.pi0 import Pi0Policy
from vla_gym.policies.pi0.make_tiny import main as make_tiny_main
from vla_gym.policies.pi0.make_tiny import train_tokenizer, write_tiny_pi0
from vla_gym.policies.pi0.processing import to_env_actions
from vla_gym.policies.testing import observation, observation_batch
from vla_gym.policies.toolkit.errors import CheckpointError

pytestmark = pytest.mark.filterwarnings("ignore:.*weights do not match Gemma variant")
DATA = Path(__file__).parent / "data"
NAMES = ("openpi-pi0", "openpi-pi05", "lerobot-pi0", "lerobot-pi05")
STAGES = {"preprocess", "model", "postprocess", "vision", "prefix", "denoise"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pi0_policy")
    for name in NAMES:
        layout, variant = name.split("-")
        write_tiny_pi0(root / name, layout, variant)
    return {name: root / name for name in NAMES}


@pytest.fixture(scope="module")
def fp32(tiny):
    return {name: Pi0Policy.from_pretrained(tiny[name], device="cpu", precision="fp32") for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_each_layout_loads_through_from_pretrained_and_returns_lib_chunks(fp32, name):
    policy = fp32[name]
    chunk = policy.act(observation_batch(2, wrist=True))
    horizon = {"openpi-pi05": 10}.get(name, 50)
    assert chunk.actions.shape == (2, horizon, 7) and chunk.actions.dtype == np.float32
    assert set(chunk.info["timing_ms"]) == STAGES and chunk.info["num_denoise_steps"] == 10
    info = policy.info()
    assert (info.name, info.chunk_size, info.action_dim) == (name.split("-")[1], horizon, 7)
    assert info.weight_bytes > 0 and info.extra["layout"] == name.split("-")[0]
    assert policy.inputs.cameras == ("agentview", "wrist")
    # the env renders what each reference renders: openpi's client 256, lerobot-eval's LiberoEnv 360
    assert policy.inputs.image_size == {"openpi": 256, "lerobot": 360}[info.extra["layout"]]
    assert info.extra["image_pipeline"] == info.extra["layout"]


@pytest.mark.parametrize("name", ["openpi-pi0", "lerobot-pi05"])
def test_batch_rows_equal_single_calls_and_are_independent_samples(fp32, name):
    policy = fp32[name]
    obs = observation_batch(3, wrist=True)
    seeds = [11, 12, 13]
    policy.reset([0, 1, 2], seeds)
    batch = policy.act(obs, env_ids=[0, 1, 2]).actions
    policy.reset([0, 1, 2], seeds)
    for i in (2, 0, 1):  # any order: each env has its own generator
        single = policy.act([obs[i]], env_ids=[i]).actions[0]
        np.testing.assert_allclose(batch[i], single, rtol=0, atol=1e-5)
    policy.reset([0, 1], [5, 6])
    same_obs = policy.act([obs[0], obs[0]], env_ids=[0, 1]).actions
    assert np.abs(same_obs[0] - same_obs[1]).max() > 1e-3  # B independent samples, not one repeated


def test_noise_is_drawn_from_the_episode_seed(fp32):
    policy = fp32["openpi-pi05"]
    obs = [observation(wrist=True)]
    policy.reset([4], [123])
    first = policy.act(obs, env_ids=[4]).actions
    policy.reset([4], [123])
    inputs = policy.preprocess(obs, [4])
    expected_noise = torch.randn((10, 32), generator=torch.Generator().manual_seed(123))
    torch.testing.assert_close(inputs["noise"][0], expected_noise, rtol=0, atol=0)
    raw = inputs.pop("raw_state")
    out = policy.model.sample_actions(**inputs, num_steps=10).numpy()
    np.testing.assert_allclose(first, to_env_actions(out, policy.norm.actions, raw, delta_actions=False,
                                                     output_dim=7), rtol=0, atol=1e-6)
    policy.reset([4], [124])
    assert np.abs(policy.act(obs, env_ids=[4]).actions - first).max() > 1e-3
    policy.reset()  # all envs forgotten: env 4 restarts from seed + 4
    again = policy.act(obs, env_ids=[4]).actions
    policy.reset([4], [policy.seed + 4])
    np.testing.assert_array_equal(policy.act(obs, env_ids=[4]).actions, again)


def test_which_inputs_each_recipe_reads(fp32):
    """pi05_libero sees no state; pi0 reads it (continuous token, delta->absolute); LeRobot pi0.5 via the prompt."""
    base = observation(wrist=True)
    moved = {**base, "state": base["state"] + np.float32(0.3)}
    reworded = {**base, "instruction": "open the drawer"}

    def acts(policy, o):
        policy.reset([0], [1])
        return policy.act([o], env_ids=[0]).actions[0]

    pi05 = fp32["openpi-pi05"]
    np.testing.assert_array_equal(acts(pi05, base), acts(pi05, moved))
    assert not pi05.inputs.uses_state
    stateless = {k: v for k, v in base.items() if k != "state"}  # a client need not send it
    np.testing.assert_array_equal(acts(pi05, stateless), acts(pi05, base))
    assert np.abs(acts(pi05, base) - acts(pi05, reworded)).max() > 1e-4
    for name in ("openpi-pi0", "lerobot-pi05", "lerobot-pi0"):
        assert np.abs(acts(fp32[name], base) - acts(fp32[name], moved)).max() > 1e-4, name
    pi0 = fp32["openpi-pi0"]  # delta -> absolute: the state is added to dims 0-5
    pi0.reset([0], [1])
    inputs = pi0.preprocess([base], [0])
    raw = inputs.pop("raw_state")
    out = pi0.model.sample_actions(**inputs, num_steps=10).numpy()
    rel = pi0.norm.actions.unnormalize(out[..., :7])
    np.testing.assert_allclose(acts(pi0, base)[:, :6] - rel[0, :, :6], np.broadcast_to(raw[0, :6], (50, 6)),
                               atol=1e-5)


def _fixture_script(name: str):
    """The fixture script's own ``frames`` (rebuilt here, checked against the stored hash)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, DATA / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _obs(script, ref, i: int) -> dict:
    agent, wrist = script.frames(int(ref[f"seed_{i}"]))
    assert hashlib.sha256(agent.tobytes() + wrist.tobytes()).hexdigest() == str(ref[f"frames_sha256_{i}"])
    return {"images": {"agentview": upright(agent), "wrist": upright(wrist)}, "instruction": str(ref[f"task_{i}"]),
            "state": ref[f"state_{i}"]}


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_whole_openpi_libero_path_equals_openpis_own(tiny, variant):
    """The LIBERO client + create_trained_policy transforms + PI0Pytorch of openpi itself, on the same tiny
    checkpoint, frames, state, prompt and noise (``data/make_pi0_openpi_policy_fixture.py``).

    Measured: fp32 max abs difference <= 4e-7 (actions up to 3.9); bf16 (openpi's precision policy on
    both sides) <= 1.8e-3, the size of openpi's own bf16-vs-fp32 difference on these checkpoints."""
    ref = np.load(DATA / "pi0_openpi_policy_reference.npz")
    ckpt = tiny[f"openpi-{variant}"]
    assert hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest() == str(ref[f"sha256_{variant}"])
    script = _fixture_script("make_pi0_openpi_policy_fixture")
    for precision, atol in (("fp32", 2e-6), ("bf16", 5e-3)):
        policy = Pi0Policy.from_pretrained(ckpt, device="cpu", precision=None if precision == "bf16" else "fp32")
        for i in range(2):
            policy.reset([0], [int(ref[f"seed_{i}"])])
            ours = policy.act([_obs(script, ref, i)], env_ids=[0]).actions[0]
            np.testing.assert_allclose(ours, ref[f"{variant}_{precision}_{i}"], rtol=0, atol=atol,
                                       err_msg=f"{variant} {precision} sample {i}")


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_whole_lerobot_path_equals_lerobots_own(tiny, variant):
    """LeRobot 0.6.1 loading the same tiny LeRobot dir (its from_pretrained and processor pipelines) and
    running preprocessor -> predict_action_chunk -> postprocessor (``data/make_pi0_lerobot_policy_fixture.py``)
    on images made by openpi's client (PIL resize), i.e. vla_gym's ``image_pipeline="openpi"`` option.

    Measured: max abs difference <= 1e-6 (float32, the checkpoint's dtype; actions up to 5)."""
    ref = np.load(DATA / "pi0_lerobot_policy_reference.npz")
    ckpt = tiny[f"lerobot-{variant}"]
    assert hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest() == str(ref[f"sha256_{variant}"])
    script = _fixture_script("make_pi0_lerobot_policy_fixture")
    policy = Pi0Policy.from_pretrained(ckpt, device="cpu", image_pipeline="openpi")
    for i in range(2):
        policy.reset([0], [int(ref[f"seed_{i}"])])
        ours = policy.act([_obs(script, ref, i)], env_ids=[0]).actions[0]
        np.testing.assert_allclose(ours, ref[f"{variant}_fp32_{i}"], rtol=0, atol=2e-6, err_msg=f"{variant} {i}")


@pytest.fixture(scope="module")
def lerobot_e2e(tmp_path_factory):
    """The fixture's dirs (make_tiny, seed 0): pi0 stored float32, pi0.5 stored as bf16 LeRobot runs save it."""
    root = tmp_path_factory.mktemp("pi0_lerobot_e2e")
    return {"pi0": write_tiny_pi0(root / "pi0", "lerobot", "pi0"),
            "pi05": write_tiny_pi0(root / "pi05", "lerobot", "pi05", dtype="bfloat16")}


def _check_e2e_fixture(fixture: str, script_name: str, ckpt, variant: str, cases, render_size: int) -> None:
    """``from_pretrained`` + ``act(noise=)`` on the raw frames of a reference-made end-to-end fixture, per
    (precision key, precision option, atol) case; the checkpoint files and frames are checked to be the fixture's."""
    ref = np.load(DATA / fixture)
    assert hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest() == str(ref[f"sha256_{variant}"])
    script = _fixture_script(script_name)
    for key, precision, atol in cases:
        policy = Pi0Policy.from_pretrained(ckpt, device="cpu", precision=precision)
        assert policy.inputs.image_size == render_size and policy.precision == key
        for i, size in enumerate(script.SIZES):
            agent, wrist = script.frames(i)
            assert agent.shape[:2] == size
            assert hashlib.sha256(agent.tobytes() + wrist.tobytes()).hexdigest() == str(ref[f"frames_sha256_{i}"])
            obs = {"images": {"agentview": upright(agent), "wrist": upright(wrist)},
                   "instruction": str(ref[f"task_{i}"]), "state": ref[f"state_{i}"]}
            noise = script.noise(int(ref["seeds"][i]), policy.chunk_size)[None]
            ours = policy.act([obs], noise=noise).actions[0]
            np.testing.assert_allclose(ours, ref[f"{variant}_{key}_{i}"], rtol=0, atol=atol,
                                       err_msg=f"{variant} {key} {size}")


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_lerobot_eval_path_from_raw_frames_equals_lerobots_own(lerobot_e2e, variant):
    """lerobot-eval's step by LeRobot 0.6.1 itself (``data/make_pi0_lerobot_e2e_fixture.py``): raw frames at
    360x360 (its LIBERO render), 256x256 and 200x300 -> preprocess_observation -> LiberoProcessorStep ->
    policy_preprocessor -> predict_action_chunk(noise) -> policy_postprocessor, on files stored as LeRobot
    stores them (pi0 float32; pi0.5 mixed F32/BF16 of a bf16 run), against ``from_pretrained`` + ``act(noise=)``.

    Measured: fp32 <= 7.2e-7 (actions up to 3.8); pi0.5 at its config's bf16 on both sides <= 1.5e-3. With
    openpi's PIL resize instead (today's main, or ``image_pipeline="openpi"``) fp32 is off by up to 1.0e-3."""
    cases = [("fp32", "fp32", 1e-5)] + ([("bf16", None, 5e-3)] if variant == "pi05" else [])
    _check_e2e_fixture("pi0_lerobot_e2e_reference.npz", "make_pi0_lerobot_e2e_fixture", lerobot_e2e[variant],
                       variant, cases, render_size=360)


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_openpi_client_path_from_raw_frames_equals_openpis_own(tiny, variant):
    """openpi's LIBERO client + ``Policy.infer(noise=)`` by openpi itself (``data/make_pi0_openpi_e2e_fixture.py``):
    raw frames at 256x256 (its render), 200x300 (PIL resize and padding) and 224x224 (no resize), the
    bf16-stored converter files, against ``from_pretrained`` + ``act(noise=)``.

    Measured: fp32 <= 4.2e-7 (actions up to 4.0); openpi's bf16 policy on both sides <= 1.7e-3. Today's main
    computes the same numbers (this path was right); what it lacked is `act(noise=)`."""
    _check_e2e_fixture("pi0_openpi_e2e_reference.npz", "make_pi0_openpi_e2e_fixture", tiny[f"openpi-{variant}"],
                       variant, [("fp32", "fp32", 1e-5), ("bf16", None, 5e-3)], render_size=256)


def test_explicit_noise_reproduces_a_chunk_and_is_validated(fp32):
    """``act(noise=)`` is the flow's x_1: the same noise gives the same chunk, whatever the env generators."""
    policy = fp32["openpi-pi05"]
    obs = observation_batch(2, wrist=True)
    assert policy.noise_shape == (10, 32)
    policy.reset([0, 1], [3, 4])
    seeded = policy.act(obs, env_ids=[0, 1]).actions
    policy.reset([0, 1], [3, 4])
    noise = policy.noise([0, 1])
    policy.reset([0, 1], [99, 98])  # other generator states: irrelevant when noise is given
    given = policy.act(obs, env_ids=[0, 1], noise=noise).actions
    np.testing.assert_array_equal(given, seeded)
    np.testing.assert_array_equal(policy.act(obs, noise=noise.numpy()).actions, seeded)  # numpy too
    after = policy.act(obs, env_ids=[0, 1]).actions  # the generators were not advanced by noise=
    policy.reset([0, 1], [99, 98])
    np.testing.assert_array_equal(policy.act(obs, env_ids=[0, 1]).actions, after)
    assert np.abs(policy.act(obs, noise=noise + 0.5).actions - seeded).max() > 1e-3
    for bad, err, match in ((noise[:1], ValueError, r"\(B, action_horizon, max_action_dim\) = \(2, 10, 32\)"),
                            (noise[..., :7], ValueError, "shape"),
                            (noise.double(), TypeError, "float32"),
                            (noise.tolist(), TypeError, "torch.Tensor or numpy"),
                            (noise * float("nan"), ValueError, "finite")):
        with pytest.raises(err, match=match):
            policy.act(obs, noise=bad)


def test_default_precision_is_the_references(tiny):
    openpi = Pi0Policy.from_pretrained(tiny["openpi-pi05"], device="cpu")  # openpi: bf16, fp32-kept params
    params = dict(openpi.model.named_parameters())
    assert params["paligemma_with_expert.paligemma.model.language_model.layers.0.self_attn.q_proj.weight"].dtype \
        == torch.bfloat16
    for kept in ("paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.dense.weight",
                 "paligemma_with_expert.paligemma.model.language_model.norm.weight",
                 "paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight"):
        assert params[kept].dtype == torch.float32, kept
    assert openpi.info().extra["precision"] == "bf16"
    assert np.isfinite(openpi.act([observation(wrist=True)]).actions).all()
    lerobot = Pi0Policy.from_pretrained(tiny["lerobot-pi0"], device="cpu")  # LeRobot: config dtype float32
    assert {p.dtype for p in lerobot.model.parameters()} == {torch.float32}
    lerobot_bf16 = dict(Pi0Policy.from_pretrained(tiny["lerobot-pi0"], device="cpu", precision="bf16")
                        .model.named_parameters())  # LeRobot >= 0.6 keeps the whole vision path in fp32
    assert lerobot_bf16["paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers.0."
                        "self_attn.q_proj.weight"].dtype == torch.float32
    assert lerobot_bf16["paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight"].dtype \
        == torch.float32
    assert lerobot_bf16["paligemma_with_expert.paligemma.model.language_model.layers.0.mlp.up_proj.weight"].dtype \
        == torch.bfloat16
    assert lerobot_bf16["action_in_proj.weight"].dtype == torch.float32  # outside paligemma_with_expert: as both
    with pytest.raises(ValueError, match="precision must be"):
        Pi0Policy.from_pretrained(tiny["lerobot-pi0"], device="cpu", precision="int8")


@pytest.mark.parametrize("qname", ["none", "fp32", "fp16", "bf16", "int8", "int4"])
def test_every_quantization_option_runs_and_keeps_the_skip_list(tiny, qname):
    node = {"name": qname, "dtype": "bf16"} if qname in ("int8", "int4") else {"name": qname}
    policy = Pi0Policy.from_pretrained(tiny["openpi-pi05"], device="cpu", precision="fp32", quantization=node)
    chunk = policy.act([observation(wrist=True)])
    assert chunk.actions.shape == (1, 10, 7) and np.isfinite(chunk.actions).all()
    info = policy.info()
    assert info.quantization == qname
    if qname in ("int8", "int4"):
        assert qname in info.dtype
        modules = dict(policy.model.named_modules())
        kept = ["action_in_proj", "action_out_proj", "time_mlp_in", "time_mlp_out",
                "paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.dense"]
        assert all(type(modules[m]) is nn.Linear for m in kept)
        q = modules["paligemma_with_expert.paligemma.model.language_model.layers.0.self_attn.q_proj"]
        assert type(q) is not nn.Linear  # quantized


def test_configured_values_that_disagree_with_the_checkpoint_are_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="trained with the 'pi05_state' prompt format"):
        Pi0Policy.from_pretrained(tiny["lerobot-pi05"], device="cpu", prompt_format="pi05_libero")
    with pytest.raises(CheckpointError, match="use policy=pi0"):
        Pi0Policy.from_pretrained(tiny["openpi-pi0"], device="cpu", variant="pi05")
    with pytest.raises(CheckpointError, match="asset_id applies to openpi dirs only"):
        Pi0Policy.from_pretrained(tiny["lerobot-pi0"], device="cpu", asset_id="physical-intelligence/libero")
    big = tmp_path / "big.model"
    big.write_bytes(train_tokenizer(vocab_size=600))
    with pytest.raises(CheckpointError, match="not this model's tokenizer"):
        Pi0Policy.from_pretrained(tiny["lerobot-pi0"], device="cpu", tokenizer=big)
    with pytest.raises(ValueError, match="image_pipeline must be one of"):
        Pi0Policy.from_pretrained(tiny["lerobot-pi0"], device="cpu", image_pipeline="pil")
    chosen = Pi0Policy.from_pretrained(tiny["lerobot-pi0"], device="cpu", precision="fp32", image_pipeline="openpi",
                                       image_size=256)  # both asked for: openpi's pixels on a LeRobot dir
    assert chosen.inputs.image_size == 256 and chosen.info().extra["image_pipeline"] == "openpi"


def test_chunk_execution_and_scene_seed_defaults(fp32):
    assert Pi0Policy.reference_scene_seed == 7 and Pi0Policy.loads_weights
    assert fp32["openpi-pi0"].execution.replan_steps == 5 and fp32["openpi-pi05"].execution.replan_steps == 5
    assert fp32["lerobot-pi0"].execution.replan_steps == 50  # LeRobot executes n_action_steps
    assert fp32["lerobot-pi05"].execution.replan_steps == 10
    assert all(p.execution.mode == "open_loop" for p in fp32.values())


def test_make_tiny_cli_writes_a_loadable_checkpoint(tmp_path, capsys):
    make_tiny_main([str(tmp_path / "ck"), "--layout", "lerobot", "--variant", "pi0", "--seed", "3"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "ck")
    names = {p.name for p in (tmp_path / "ck").iterdir()}
    assert {"config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json",
            "policy_preprocessor_step_6_normalizer_processor.safetensors",
            "policy_postprocessor_step_0_unnormalizer_processor.safetensors", "paligemma_tokenizer.model"} <= names
    assert Pi0Policy.from_pretrained(tmp_path / "ck", device="cpu").chunk_size == 50


def test_short_libero_rollout_per_layout(tiny, tmp_path, subprocess_env):
    """policy=pi0 on the openpi layout and policy=pi05 on the LeRobot layout, run side by side."""
    runs = {"openpi-pi0": ("pi0", 2), "lerobot-pi05": ("pi05", 1)}  # openpi: 5 of each chunk; LeRobot: 10
    procs = {}
    for name, (policy, _) in runs.items():
        args = ["env=libero_spatial", "tasks=[0]", f"policy={policy}", f"policy.checkpoint={tiny[name]}",
                "policy.device=cpu", "policy.precision=fp32", "episodes_per_task=1", "max_steps=10",
                "video.size=64", f"hydra.run.dir={tmp_path / name}"]
        procs[name] = subprocess.Popen([PYTHON, "-m", "vla_gym.rollout", *args], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, env=subprocess_env)
    for name, (policy, queries) in runs.items():
        output, _ = procs[name].communicate(timeout=600)
        assert procs[name].returncode == 0, output[-3000:]
        out = tmp_path / name
        (record,) = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
        assert record["error"] is None and record["steps"] == 10
        assert record["policy_queries"] == queries
        meta = json.loads((out / "results.json").read_text())["meta"]
        info = meta["policy_info"]
        assert info["name"] == policy and info["extra"]["layout"] == name.split("-")[0]
        assert meta["chunk"]["replan_steps"] == (5 if policy == "pi0" else 10)
