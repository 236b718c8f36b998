"""pi0 / pi0.5 adapters around the network: layouts, key rules, stats, prompts, tokenizer, LIBERO processing.

Fidelity: tokens and (un)normalisation are compared with ``pi0_openpi_reference.json``, produced by
running openpi's own ``PaligemmaTokenizer.tokenize`` and ``transforms.Normalize/Unnormalize``
(``data/make_pi0_openpi_fixture.py``) on the stored tiny tokenizer; LeRobot's stats files,
(un)normaliser and prompt rules with what LeRobot's own processors computed and saved
(``data/make_pi0_lerobot_fixture.py``: ``pi0_lerobot_reference.json``, ``pi0_lerobot_pipeline/``); images with openpi's own
``openpi_client.image_tools.resize_with_pad`` on the raw frame turned as openpi's LIBERO client
does; the key rules with the file LeRobot's own ``save_model`` wrote (``pi0_ref_*.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_gym.envs.contract import upright
from vla_gym.policies.pi0 import config, images, loader, processing, prompts, stats
from vla_gym.policies.pi0.make_tiny import write_tiny_pi0
from vla_gym.policies.pi0.modeling import EMBED_KEY, EXPERT_LM_HEAD_KEY, LM_HEAD_KEY
from vla_gym.policies.pi0.tokenizer import PaligemmaTokenizer, find_tokenizer
from vla_gym.policies.testing import make_frame
from vla_gym.policies.toolkit.errors import CheckpointError, NormStatsError
from vla_gym.policies.toolkit.norm_stats import NormKind, NormStats

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "pi0_openpi_reference.json").read_text())
LEROBOT = json.loads((DATA / "pi0_lerobot_reference.json").read_text())
# The tiny checkpoints name the real variants (gemma_2b / gemma_300m) on purpose: the loader warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*weights do not match Gemma variant")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pi0_tiny")
    return {f"{layout}-{variant}": write_tiny_pi0(root / f"{layout}-{variant}", layout, variant)
            for layout in ("openpi", "lerobot") for variant in ("pi0", "pi05")}


@pytest.fixture
def copy(tiny, tmp_path):
    def make(name: str) -> Path:
        return Path(shutil.copytree(tiny[name], tmp_path / name))
    return make


# -- prompts and tokenizer --------------------------------------------------------------------------
def test_tokens_equal_openpis_own_tokenizer():
    """pi0 / pi05_libero (state None) and the discrete-state format, incl. cleaning, BOS, padding, truncation."""
    toks = {n: PaligemmaTokenizer(DATA / "pi0_tiny_tokenizer.model", n) for n in (48, 200)}
    assert len(REF["tokenize"]) == 18
    for case in REF["tokenize"]:
        tok = toks[case["max_len"]]
        if case["state"] is None:
            fmts = [prompts.PROMPT_FORMATS["pi0"], prompts.PROMPT_FORMATS["pi05_libero"]]
        else:
            fmts = [prompts.PROMPT_FORMATS["pi05_state"]]
        for fmt in fmts:
            state = None if case["state"] is None else np.asarray(case["state"])
            ids, mask = tok.tokenize(fmt, case["prompt"], state)
            assert ids.tolist() == case["ids"], (fmt.name, case["prompt"], case["max_len"])
            assert mask.tolist() == case["mask"]
    assert any(all(c["mask"]) for c in REF["tokenize"])  # a truncated case is among them


def test_state_discretisation_is_openpis_256_bins_without_clipping():
    state = np.array([-1.5, -1.0, -1.0 + 2 / 256, 0.0, 1.0 - 2 / 256, 0.999, 1.0, 2.0])
    assert prompts.discretize_state(state).tolist() == [-1, 0, 1, 128, 255, 255, 255, 255]
    text = prompts.PROMPT_FORMATS["pi05_state"].pieces("pick_up  the bowl\n", state)
    assert text == ["Task: pick up  the bowl, State: -1 0 1 128 255 255 255 255;\nAction: "]


def test_lerobot_pi0_prompt_is_task_plus_newline_in_one_piece_without_cleaning():
    tok = PaligemmaTokenizer(DATA / "pi0_tiny_tokenizer.model", 48)
    fmt = prompts.PROMPT_FORMATS["lerobot_pi0"]
    assert fmt.pieces("open_the drawer") == ["open_the drawer\n"]
    assert fmt.pieces("open the drawer\n") == ["open the drawer\n"]
    assert tok.encode(fmt, "open_the drawer") == tok.sp.encode("open_the drawer\n", add_bos=True)
    openpi = tok.encode(prompts.PROMPT_FORMATS["pi0"], "open_the drawer")
    assert openpi == tok.sp.encode("open the drawer", add_bos=True) + tok.sp.encode("\n")
    with pytest.raises(ValueError, match="no state"):
        prompts.PROMPT_FORMATS["pi05_state"].pieces("task", None)


def test_a_configured_prompt_format_must_equal_the_checkpoints():
    assert prompts.check_prompt_format(None, "pi0", "ckpt").name == "pi0"
    assert prompts.check_prompt_format("pi05_state", "pi05_state", "ckpt").uses_state
    with pytest.raises(ValueError, match="trained with the 'pi05_libero' prompt format"):
        prompts.check_prompt_format("pi05_state", "pi05_libero", "ckpt")
    with pytest.raises(ValueError, match="unknown prompt format"):
        prompts.check_prompt_format("chat", "pi0", "ckpt")


def test_tokenizer_is_found_at_the_configured_path_or_beside_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "cache"))
    model = tmp_path / "tok" / "tokenizer.model"
    model.parent.mkdir()
    shutil.copy(DATA / "pi0_tiny_tokenizer.model", model)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert find_tokenizer(model, ckpt) == model
    assert find_tokenizer(model.parent, ckpt) == model
    with pytest.raises(CheckpointError, match="policy.tokenizer"):
        find_tokenizer(None, ckpt)
    with pytest.raises(CheckpointError, match="does not exist"):
        find_tokenizer(tmp_path / "nope.model", ckpt)
    cached = tmp_path / "cache" / "big_vision" / "paligemma_tokenizer.model"
    cached.parent.mkdir(parents=True)
    shutil.copy(model, cached)
    assert find_tokenizer(None, ckpt) == cached  # openpi's download cache
    (ckpt / "paligemma_tokenizer.model").write_bytes(b"not a sentencepiece model")
    assert find_tokenizer(None, ckpt) == ckpt / "paligemma_tokenizer.model"
    with pytest.raises(CheckpointError, match="not a SentencePiece model"):
        PaligemmaTokenizer(ckpt / "paligemma_tokenizer.model", 48)


def _hub_cache_with(root: Path, repo: str, files: dict[str, bytes]) -> Path:
    """A Hugging Face hub cache holding ``files`` of ``repo`` at ``main``, in huggingface_hub's layout."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        link = repo_dir / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    return root


def test_lerobot_dir_finds_its_tokenizer_in_the_local_hf_cache(tmp_path, monkeypatch):
    """The repo the preprocessor names (google/paligemma-3b-pt-224), found offline where AutoTokenizer would."""
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "openpi"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = write_tiny_pi0(tmp_path / "ckpt", "lerobot", "pi0")
    (ckpt / "paligemma_tokenizer.model").unlink()
    parsed = config.read_checkpoint(ckpt)
    assert parsed.tokenizer_repo == "google/paligemma-3b-pt-224"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(CheckpointError, match="hub cache .*google/paligemma-3b-pt-224/tokenizer.model"):
        find_tokenizer(None, ckpt, parsed.tokenizer_repo)
    sp_model = (DATA / "pi0_tiny_tokenizer.model").read_bytes()
    _hub_cache_with(tmp_path / "hf_home" / "hub", "google/paligemma-3b-pt-224", {"tokenizer.model": sp_model})
    found = find_tokenizer(None, ckpt, parsed.tokenizer_repo)  # $HF_HOME/hub
    assert found.read_bytes() == sp_model and "models--google--paligemma-3b-pt-224" in str(found)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))  # HF_HUB_CACHE wins over HF_HOME
    with pytest.raises(CheckpointError, match="no PaliGemma tokenizer found"):
        find_tokenizer(None, ckpt, parsed.tokenizer_repo)
    _hub_cache_with(tmp_path / "elsewhere", "google/paligemma-3b-pt-224", {"tokenizer.model": sp_model})
    from vla_gym.policies.pi0 import Pi0Policy

    policy = Pi0Policy.from_pretrained(ckpt, device="cpu", precision="fp32")  # the user's path, offline
    assert str(policy.tokenizer.file).startswith(str(tmp_path / "elsewhere"))
    with pytest.raises(CheckpointError, match="no PaliGemma tokenizer found"):
        find_tokenizer(None, ckpt)  # openpi dirs name no hub repo: the cache is not searched
    with pytest.raises(CheckpointError, match="not a hub repo id"):
        find_tokenizer(None, ckpt, "../../etc/passwd")


# -- normalisation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("quantiles", [False, True])
def test_openpi_normalisation_equals_openpis_own_transforms(quantiles, tmp_path):
    case = next(c for c in REF["normalize"] if c["use_quantiles"] == quantiles)
    file = tmp_path / "norm_stats.json"
    file.write_text(json.dumps({"norm_stats": REF["stats"]}))
    kind = NormKind.BOUNDS_Q01_Q99 if quantiles else NormKind.MEAN_STD
    norm = stats.load_openpi_stats(file, kind, "pi0")
    np.testing.assert_allclose(norm.state.normalize(np.asarray(case["state"])), case["normalized"], rtol=1e-12)
    assert np.abs(case["normalized"]).max() > 1.0  # beyond the quantiles: neither side clips
    model = np.asarray(case["model_actions"])
    ours = norm.actions.unnormalize(model[..., :norm.actions.dim])
    np.testing.assert_allclose(ours, np.asarray(case["unnormalized"])[..., :7], rtol=1e-12)


def test_lerobot_stats_files_and_formulas_equal_lerobots_own_pipeline():
    """The pipeline dir LeRobot's save_pretrained wrote, its normaliser's and unnormaliser's outputs,
    and its pi0.5 state prompt / pi0 newline rule (``data/make_pi0_lerobot_fixture.py``)."""
    quant = LEROBOT["modes"]["QUANTILES"]
    norm = stats.load_lerobot_stats(DATA / "pi0_lerobot_pipeline", NormKind.BOUNDS_Q01_Q99, NormKind.BOUNDS_Q01_Q99,
                                    "pi05")
    state = np.asarray(LEROBOT["state"])
    ours = norm.state.normalize(state)
    np.testing.assert_allclose(ours, quant["normalized_state"], rtol=2e-5, atol=1e-4)
    assert np.abs(ours).max() > 1e6  # the constant dim: eps substituted for the zero width, not added
    np.testing.assert_allclose(norm.actions.unnormalize(np.asarray(LEROBOT["model_actions"])),
                               quant["unnormalized_actions"], rtol=1e-5, atol=1e-5)
    fmt = prompts.PROMPT_FORMATS["pi05_state"]
    tasks = ["pick_up the black bowl\n", "  open the top drawer of the cabinet"]
    assert [fmt.pieces(t, s)[0] for t, s in zip(tasks, np.asarray(quant["normalized_state"]))] == quant["pi05_prompts"]
    assert [prompts.PROMPT_FORMATS["lerobot_pi0"].pieces(t)[0] for t in tasks] == LEROBOT["pi0_tasks"]
    mean_std = LEROBOT["modes"]["MEAN_STD"]
    raw = LEROBOT["stats"]
    z = stats.FeatureNorm(NormStats.from_mapping(NormKind.MEAN_STD, raw["observation.state"], eps=1e-8), "lerobot")
    np.testing.assert_allclose(z.normalize(state), mean_std["normalized_state"], rtol=1e-5, atol=1e-5)
    za = stats.FeatureNorm(NormStats.from_mapping(NormKind.MEAN_STD, raw["action"], eps=1e-8), "lerobot")
    np.testing.assert_allclose(za.unnormalize(np.asarray(LEROBOT["model_actions"])), mean_std["unnormalized_actions"],
                               rtol=1e-5, atol=1e-5)
    assert [fmt.pieces(t, s)[0] for t, s in zip(tasks, np.asarray(mean_std["normalized_state"]))] \
        == mean_std["pi05_prompts"]


def test_lerobot_normalisation_formulas_and_zero_width_eps():
    def feature(kind, a, b):
        return stats.FeatureNorm(NormStats.from_mapping(kind, dict(zip(stats_fields[kind], (a, b))), eps=1e-8),
                                 "lerobot")

    stats_fields = {NormKind.MEAN_STD: ("mean", "std"), NormKind.BOUNDS_Q01_Q99: ("q01", "q99")}
    q = feature(NormKind.BOUNDS_Q01_Q99, [0.0, 1.0, 2.0], [2.0, 1.0, 6.0])
    x = np.array([3.0, 1.5, 2.0])
    np.testing.assert_allclose(q.normalize(x), [2.0, (2 * 0.5 / 1e-8) - 1, -1.0])  # no +eps, no clip
    np.testing.assert_allclose(q.unnormalize(q.normalize(x)), x)
    m = feature(NormKind.MEAN_STD, [1.0, 2.0, 3.0], [0.5, 1.0, 2.0])
    np.testing.assert_allclose(m.normalize(x), (x - [1, 2, 3]) / (np.array([0.5, 1, 2]) + 1e-8))


def test_wrong_kind_or_missing_stats_stop_with_a_message(copy):
    d = copy("openpi-pi05")
    file = d / "assets" / "physical-intelligence" / "libero" / "norm_stats.json"
    raw = json.loads(file.read_text())
    for feat in raw["norm_stats"].values():
        del feat["q01"], feat["q99"]
    file.write_text(json.dumps(raw))
    with pytest.raises(NormStatsError, match="bounds_q01_q99 statistics need"):
        stats.load_openpi_stats(file, NormKind.BOUNDS_Q01_Q99, "pi05")
    shutil.rmtree(d / "assets")
    with pytest.raises(CheckpointError, match="#638"):
        stats.find_openpi_stats(d, "physical-intelligence/libero")


def test_lerobot_stats_come_from_the_normaliser_steps_and_must_match_the_config(copy):
    d = copy("lerobot-pi05")
    norm = stats.load_lerobot_stats(d, NormKind.BOUNDS_Q01_Q99, NormKind.BOUNDS_Q01_Q99, "pi05")
    tensors = load_file(d / "policy_postprocessor_step_0_unnormalizer_processor.safetensors")
    np.testing.assert_array_equal(norm.actions.stats.b, tensors["action.q99"].double().numpy())
    assert norm.state.dim == 8 and norm.actions.dim == 7 and norm.state.rule == "lerobot"
    with pytest.raises(NormStatsError, match="disagree"):
        stats.load_lerobot_stats(d, NormKind.MEAN_STD, NormKind.BOUNDS_Q01_Q99, "pi05")
    pre = json.loads((d / "policy_preprocessor.json").read_text())
    for step in pre["steps"]:
        step.pop("state_file", None)
    (d / "policy_preprocessor.json").write_text(json.dumps(pre))
    with pytest.raises(NormStatsError, match="base checkpoint"):
        stats.load_lerobot_stats(d, NormKind.BOUNDS_Q01_Q99, NormKind.BOUNDS_Q01_Q99, "pi05")


# -- layouts and recipes ----------------------------------------------------------------------------
def test_layout_variant_and_recipe_are_read_from_each_tiny_checkpoint(tiny, tmp_path):
    expect = {
        "openpi-pi0": ("openpi", "pi0", "pi0_libero", 50, "pi0", 48, True, NormKind.MEAN_STD),
        "openpi-pi05": ("openpi", "pi05", "pi05_libero", 10, "pi05_libero", 200, False, NormKind.BOUNDS_Q01_Q99),
        "lerobot-pi0": ("lerobot", "pi0", "lerobot:pi0", 50, "lerobot_pi0", 48, False, NormKind.MEAN_STD),
        "lerobot-pi05": ("lerobot", "pi05", "lerobot:pi05", 50, "pi05_state", 200, False, NormKind.BOUNDS_Q01_Q99),
    }
    for name, (layout, variant, prov, horizon, fmt, max_len, delta, kind) in expect.items():
        ckpt = config.read_checkpoint(tiny[name])
        got = (ckpt.layout, ckpt.variant, ckpt.provenance, ckpt.action_horizon, ckpt.prompt_format,
               ckpt.max_token_len, ckpt.delta_actions, ckpt.state_kind)
        assert got == (layout, variant, prov, horizon, fmt, max_len, delta, kind), name
    assert config.read_checkpoint(tiny["openpi-pi0"]).reference_precision == "bfloat16"
    assert config.read_checkpoint(tiny["lerobot-pi0"]).reference_precision == "float32"
    assert config.read_checkpoint(tiny["lerobot-pi05"]).n_action_steps == 10
    assert config.read_checkpoint(tiny["lerobot-pi05"]).image_slots == (
        "observation.images.image", "observation.images.image2", "observation.images.empty_camera_0")
    bare = Path(shutil.copytree(tiny["openpi-pi05"], tmp_path / "bare"))
    (bare / "config.json").unlink()  # the converter's config.json is "for reference": the recipe decides
    assert config.read_checkpoint(bare).action_horizon == 10
    parent = tmp_path / "run"  # a LeRobot training output: <run>/pretrained_model/
    shutil.copytree(tiny["lerobot-pi05"], parent / "pretrained_model")
    assert config.read_checkpoint(parent).path == parent / "pretrained_model"


def test_lerobot_empty_cameras_count_once_whether_or_not_the_config_lists_them(copy):
    d = copy("lerobot-pi0")
    cfg = json.loads((d / "config.json").read_text())
    del cfg["input_features"]["observation.images.empty_camera_0"]
    (d / "config.json").write_text(json.dumps({**cfg, "empty_cameras": 2}))
    assert config.read_checkpoint(d).image_slots[1:] == (
        "observation.images.image2", "observation.images.empty_camera_0", "observation.images.empty_camera_1")


def test_configured_variant_recipe_or_horizon_that_disagree_are_errors(tiny, copy, tmp_path):
    with pytest.raises(CheckpointError, match="holds a pi0 model but variant='pi05'"):
        config.read_checkpoint(tiny["openpi-pi0"], variant="pi05")
    with pytest.raises(CheckpointError, match="is a pi05 recipe"):
        config.read_checkpoint(tiny["openpi-pi0"], openpi_config="pi05_libero")
    with pytest.raises(CheckpointError, match="openpi-PyTorch dirs only"):
        config.read_checkpoint(tiny["lerobot-pi0"], openpi_config="pi0_libero")
    d = copy("openpi-pi05")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "action_horizon": 50}))
    with pytest.raises(CheckpointError, match="action_horizon=50"):
        config.read_checkpoint(d)
    d = copy("lerobot-pi0")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "type": "pi05"}))
    with pytest.raises(CheckpointError, match="type='pi05'"):
        config.read_checkpoint(d)
    (d / "config.json").write_text(json.dumps({**cfg, "type": "smolvla"}))
    with pytest.raises(CheckpointError, match="reads LeRobot pi0 and pi05"):
        config.read_checkpoint(d)
    orbax = tmp_path / "pi05_libero"
    (orbax / "params").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="convert_jax_model_to_pytorch"):
        config.read_checkpoint(orbax)


# -- key rules --------------------------------------------------------------------------------------
def test_loaded_network_holds_every_tensor_of_the_file_under_openpi_names(tiny):
    for name in tiny:
        ckpt = config.read_checkpoint(tiny[name])
        model = loader.build_model(ckpt)
        file = load_file(ckpt.weights)
        own = model.state_dict()
        prefix = "model." if ckpt.layout == "lerobot" else ""
        for key, value in file.items():
            key = key[len(prefix):]
            if key == EXPERT_LM_HEAD_KEY:
                assert key not in own  # the references' unused expert head is dropped
                continue
            if not ckpt.pi05:
                key = key.replace("time_mlp_", "action_time_mlp_") if key.startswith("time_mlp_") else key
            torch.testing.assert_close(own[key], value, rtol=0, atol=0, msg=f"{name}: {key}")
        torch.testing.assert_close(own[EMBED_KEY], file[prefix + LM_HEAD_KEY], rtol=0, atol=0)  # tied


def test_sizes_come_from_the_tensors_and_a_named_variant_that_disagrees_warns(tiny):
    ckpt = config.read_checkpoint(tiny["openpi-pi05"])
    state = loader.load_state(ckpt)
    with pytest.warns(UserWarning, match="do not match Gemma variant 'gemma_300m': width 16 .variant 1024."):
        dims = loader.model_dims(state, ckpt)
    assert (dims.paligemma.width, dims.expert.width, dims.action_horizon, dims.pi05) == (32, 16, 10, True)


def test_lerobot_pi0_files_with_either_time_mlp_naming_load(copy):
    """LeRobot renames a bare ``time_mlp_*`` to ``action_time_mlp_*`` for pi0 (then adds ``model.``)."""
    d = copy("lerobot-pi0")
    state = load_file(d / "model.safetensors")
    assert "model.action_time_mlp_in.weight" in state  # what LeRobot 0.6.1 saves
    save_file({k[len("model."):].replace("action_time_mlp_", "time_mlp_"): v for k, v in state.items()},
              str(d / "model.safetensors"))
    model = loader.build_model(config.read_checkpoint(d))
    torch.testing.assert_close(model.action_time_mlp_in.weight, state["model.action_time_mlp_in.weight"])


@pytest.mark.parametrize("ref", ["openpi", "ref"])
@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_the_references_own_save_model_files_load_strictly(tmp_path, ref, variant):
    """openpi's save_model keeps only the tied lm_head; LeRobot 0.6.1's writes embed_tokens and an
    untied lm_head (then the embedding is what the prefix reads). Both carry the unused expert head."""
    d = tmp_path / variant
    d.mkdir()
    shutil.copy(DATA / f"pi0_{ref}_{variant}.safetensors", d / "model.safetensors")
    (d / "config.json").write_text(json.dumps({"action_dim": 32, "action_horizon": 50 if variant == "pi0" else 10,
                                               "paligemma_variant": "gemma_2b",
                                               "action_expert_variant": "gemma_300m", "precision": "float32"}))
    file = load_file(d / "model.safetensors")
    assert EXPERT_LM_HEAD_KEY in file and LM_HEAD_KEY in file and (EMBED_KEY in file) == (ref == "ref")
    model = loader.build_model(config.read_checkpoint(d))
    own = model.state_dict()
    torch.testing.assert_close(own[EMBED_KEY], file[EMBED_KEY if ref == "ref" else LM_HEAD_KEY], rtol=0, atol=0)
    assert set(own) == (set(file) | {EMBED_KEY}) - {EXPERT_LM_HEAD_KEY}


def test_old_naming_mixed_prefixes_and_missing_or_extra_keys_are_refused(copy):
    d = copy("lerobot-pi05")
    state = load_file(d / "model.safetensors")

    def refused(new_state: dict, match: str) -> None:
        save_file(new_state, str(d / "model.safetensors"))
        with pytest.raises(CheckpointError, match=match):
            loader.build_model(config.read_checkpoint(d))

    old = {k.replace("paligemma_with_expert.paligemma.model.language_model.",
                     "paligemma_with_expert.paligemma.language_model.model."): v for k, v in state.items()}
    refused(old, "pre-Oct-2025 LeRobot naming")
    mixed = dict(state)
    mixed["action_in_proj.weight"] = mixed.pop("model.action_in_proj.weight")
    refused(mixed, "some keys have the 'model.' prefix")
    missing = {k: v for k, v in state.items() if k != "model.action_out_proj.bias"}
    refused(missing, "does not match the pi05 network")
    refused({**state, "model.unexpected.weight": torch.zeros(1)}, "does not match the pi05 network")


# -- LIBERO processing ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(256, 256), (224, 224), (200, 300)])
def test_reference_image_equals_openpis_client_on_the_raw_frame(shape):
    """vla_gym's upright frame -> the image openpi's LIBERO client computes from the raw sim frame."""
    from openpi_client import image_tools

    raw = np.ascontiguousarray(np.resize(make_frame(max(shape)), (*shape, 3)))  # bottom-up, as the simulator
    client = image_tools.convert_to_uint8(
        image_tools.resize_with_pad(np.ascontiguousarray(raw[::-1, ::-1]), 224, 224))
    np.testing.assert_array_equal(images.OPENPI_IMAGE(upright(raw)), client)


@pytest.mark.parametrize("pipeline", images.IMAGE_PIPELINES)
def test_image_batch_scales_to_minus_one_one_and_masks_the_empty_slot(pipeline):
    raw = make_frame(256)
    obs = [{"images": {"agentview": upright(raw), "wrist": upright(raw[:, ::-1].copy())}}]
    cpu = torch.device("cpu")
    imgs, masks = images.image_batch(obs, ("agentview", "wrist", None), pipeline, cpu)
    assert [tuple(x.shape) for x in imgs] == [(1, 3, 224, 224)] * 3
    assert [m.tolist() for m in masks] == [[True], [True], [False]]
    one = images.openpi_image(upright(raw)) if pipeline == "openpi" else images.lerobot_image(upright(raw), cpu)
    torch.testing.assert_close(imgs[0][0], one, rtol=0, atol=0)
    assert (imgs[2] == -1.0).all()  # zero image -> -1, as openpi's zeros and LeRobot's -1 padding
    with pytest.raises(KeyError, match="no image for camera 'wrist'"):
        images.image_batch([{"images": {"agentview": upright(raw)}}], ("agentview", "wrist"), pipeline, cpu)


def test_lerobot_image_turns_scales_and_pads_as_resize_with_pad_torch():
    """224 frames skip the resize (LeRobot's shape check); a wide frame is scaled to 224 wide, padded centred."""
    cpu = torch.device("cpu")
    raw = make_frame(224)
    expected = torch.from_numpy(np.ascontiguousarray(raw[::-1, ::-1])).permute(2, 0, 1).float() / 255 * 2 - 1
    torch.testing.assert_close(images.lerobot_image(upright(raw), cpu), expected, rtol=0, atol=0)
    wide = np.full((100, 448, 3), 255, dtype=np.uint8)  # -> 50 x 224 of ones, 87 rows of padding above
    img = images.lerobot_image(wide, cpu)
    assert (img[:, 87:137] == 1).all() and (img[:, :87] == -1).all() and (img[:, 137:] == -1).all()
    pil = images.openpi_image(upright(make_frame(256)))
    torch_path = images.lerobot_image(upright(make_frame(256)), cpu)
    assert (pil - torch_path).abs().max() > 1e-2  # the two references' pixels differ on a downscale
    with pytest.raises(ValueError, match="image_pipeline must be one of"):
        images.check_pipeline("pil")


def test_camera_slots_of_both_layouts():
    assert processing.slot_cameras(config.OPENPI_IMAGE_SLOTS, "x") == ("agentview", "wrist", None)
    lerobot = ("observation.images.image", "observation.images.image2", "observation.images.empty_camera_0")
    assert processing.slot_cameras(lerobot, "x") == ("agentview", "wrist", None)
    with pytest.raises(CheckpointError, match="no LIBERO camera"):
        processing.slot_cameras(("observation.images.top",), "x")


def test_actions_are_unnormalised_made_absolute_for_pi0_libero_and_cut_to_seven():
    norm = stats.FeatureNorm(NormStats.from_mapping(NormKind.MEAN_STD, {"mean": np.arange(7.0), "std": np.ones(7)},
                                                    eps=1e-6), "openpi")
    out = np.zeros((2, 3, 32))
    out[..., :7] = 1.0
    state = np.arange(16.0).reshape(2, 8) * 10
    rel = processing.to_env_actions(out, norm, state, delta_actions=False, output_dim=7)
    assert rel.shape == (2, 3, 7) and rel.dtype == np.float32
    np.testing.assert_allclose(rel[0, 0], np.arange(7.0) + 1 + 1e-6, rtol=1e-6)
    absolute = processing.to_env_actions(out, norm, state, delta_actions=True, output_dim=7)
    np.testing.assert_allclose(absolute[..., :6] - rel[..., :6], np.broadcast_to(state[:, None, :6], (2, 3, 6)),
                               rtol=1e-6)
    np.testing.assert_array_equal(absolute[..., 6], rel[..., 6])  # gripper stays absolute
    assert processing.pad_state(np.ones((2, 8)), 32)[:, 8:].sum() == 0
