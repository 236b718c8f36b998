"""Every option of every config group in conf/ composes and builds through the runner's own code.

The options are read from the conf/ tree, so a new YAML is covered without editing this file:
env -> ``make_env`` + reset + steps; policy -> ``build_policy`` (each family's declared tiny
checkpoint, a temporary replay file); quantization -> ``build_policy`` of the tiny OpenVLA with that node;
perturbation -> ``make_env`` with its wrappers / env kwargs + reset; experiment -> compose, and
every swept group value must be an existing option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from vla_gym.config import CONFIG_MODULE, register_configs
from vla_gym.policy import Policy
from vla_gym.rollout import build_policy, make_env, resolve_scene_seed, resolve_tasks

CONF = Path(__file__).resolve().parents[1] / "conf"
COVERED_GROUPS = ("env", "policy", "quantization", "perturbation", "experiment", "tracker",
                  "execution")  # execution: presets tested in tests/test_latency_sources.py and test_realtime_runner.py


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def is_libero_env(name: str) -> bool:
    return OmegaConf.load(CONF / "env" / f"{name}.yaml").kind == "libero"


def selects_env_variant(perturbation: str) -> bool:
    """Perturbations with env kwargs (the LIBERO-PRO suites) need a LIBERO env, not wrappers on Lift."""
    return bool(OmegaConf.load(CONF / "perturbation" / f"{perturbation}.yaml").get("env_kwargs"))


def default_choice(group: str) -> str | None:
    """The option ``conf/rollout.yaml`` picks for ``group`` by default."""
    for entry in OmegaConf.load(CONF / "rollout.yaml").defaults:
        if isinstance(entry, DictConfig) and group in entry:
            return entry[group]
    return None


def libero_builds_slow(group: str, needs_libero: Callable[[str], bool]) -> list[Any]:
    """The options of ``group`` as parameters. LIBERO builds take ~4 s each (10-15 s on a loaded
    2-core box): all but one (the default choice if it is one, else the first) are marked slow,
    so the default run builds one of each kind and ``make test-all`` builds every one."""
    names = options(group)
    heavy = sorted((n for n in names if needs_libero(n)), key=lambda n: (n != default_choice(group), n))
    return [pytest.param(n, marks=pytest.mark.slow) if n in heavy[1:] else n for n in names]


def compose_rollout(overrides: list[str]):
    """``conf/rollout.yaml`` with ``overrides``, ``${hydra:...}`` resolvable as under ``@hydra.main``."""
    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("rollout", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def build_env(cfg, policy: Policy):
    """The env of the run's first task, exactly as ``vla_gym.rollout.run`` builds it."""
    return make_env(cfg, resolve_tasks(cfg)[0], policy, record_video=False,
                    scene_seed=resolve_scene_seed(cfg, policy))


def first_reset(env, cfg):
    """Reset as the runner's first episode does (LIBERO: init state 0, the reference's first scene;
    a reset without it draws an init state k and replays k scene resets, ~1 s each)."""
    return env.reset(seed=0, options={"init_state_id": 0} if cfg.env.kind == "libero" else None)


def wrapper_chain(env) -> list[Any]:
    chain = []
    while hasattr(env, "env"):
        chain.append(env)
        env = env.env
    return chain


def test_every_group_of_conf_is_covered_here():
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and any(p.glob("*.yaml"))}
    new = sorted(groups - set(COVERED_GROUPS))
    assert groups == set(COVERED_GROUPS), f"add a test for the new config group(s) {new}"
    for group in COVERED_GROUPS:
        assert options(group), group


# ---------------------------------------------------------------------------- env
@pytest.mark.parametrize("name", libero_builds_slow("env", is_libero_env))
def test_env_option_builds_resets_and_steps(name):
    cfg = compose_rollout([f"env={name}", "policy=random", "policy.cameras=[]", "max_steps=2",
                           "video.enabled=false"])
    policy = build_policy(cfg.policy, cfg.quantization)
    env = build_env(cfg, policy)
    try:
        obs, info = first_reset(env, cfg)
        assert isinstance(obs["instruction"], str) and obs["instruction"]
        assert obs["state"].shape == (8,) and obs["images"] == {}
        action = np.zeros(env.action_space.shape, dtype=np.float32)
        for _ in range(2):
            obs, _, terminated, truncated, info = env.step(action)
        assert truncated or terminated, "max_steps=2 did not end the episode"
    finally:
        env.close()


# ---------------------------------------------------------------------------- policy
@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory) -> Callable[[str], dict[str, Path]]:
    """Tiny checkpoint set name -> its written paths, each set written on first use by the writer
    its family declares (``make_tiny.TINY``, discovered: no family is listed here)."""
    pytest.importorskip("torch")
    from vla_gym.policies.tiny_checkpoints import make_all

    root = tmp_path_factory.mktemp("tiny_ckpts")
    written: dict[str, dict[str, Path]] = {}

    def paths(name: str) -> dict[str, Path]:
        if name not in written:
            try:
                written[name] = make_all(root, families=[name])
            except ModuleNotFoundError as exc:  # a family's optional stack (diffusers, sentencepiece, ...)
                if (exc.name or "").startswith("vla_gym"):
                    raise
                pytest.skip(f"tiny {name} checkpoints need {exc.name}")
        return written[name]

    return paths


@pytest.fixture(scope="module")
def policy_server_port():
    """A vla_gym policy server (random policy) on a loopback port, for policy=remote."""
    pytest.importorskip("websockets")
    pytest.importorskip("msgpack")
    from vla_gym.policies.random_policy import RandomPolicy
    from vla_gym.serve import serve_in_thread

    with serve_in_thread(RandomPolicy()) as server:
        yield server.port


def _replay_file(tmp_path: Path) -> Path:
    path = tmp_path / "actions.npy"
    np.save(path, np.zeros((3, 7), dtype=np.float32))
    return path


def _tiny_values(req, option: str) -> list[str]:
    """``policy.checkpoint`` (and path kwargs) of ``option``'s tiny checkpoint, as its family declares."""
    pytest.importorskip("torch")
    from vla_gym.policies.tiny_checkpoints import options as tiny_options

    declared = tiny_options()
    assert option in declared, f"policy={option} has a checkpoint but no family declares a tiny one (make_tiny.TINY)"
    tiny, how = declared[option]
    paths = req.getfixturevalue("tiny_sets")(tiny.name)
    return [f"policy.checkpoint={paths[how.checkpoint]}", *(f"policy.{k}={paths[v]}" for k, v in how.paths.items())]


# How to fill a policy option's required (???) values, given the test's ``request`` (for fixtures)
# and a temp dir. Options with weights get theirs from their family's tiny set (``make_tiny.TINY``);
# any other new option with required values fails test_policy_option_builds until it is listed here.
REQUIRED_VALUES: dict[str, Callable[[Any, Path], list[str]]] = {
    "remote": lambda req, tmp: [f"policy.port={req.getfixturevalue('policy_server_port')}",
                                "policy.connect_timeout_s=10"],
    "replay": lambda req, tmp: [f"policy.actions={_replay_file(tmp)}"],
}


def _policy_overrides(name: str, request, tmp_path: Path) -> list[str]:
    if name in REQUIRED_VALUES:
        values = REQUIRED_VALUES[name](request, tmp_path)
    elif "checkpoint" in OmegaConf.load(CONF / "policy" / f"{name}.yaml").keys():  # a policy with weights
        values = _tiny_values(request, name)
    else:
        values = []
    overrides = [f"policy={name}", *values]
    cfg = compose_rollout(overrides)
    missing = sorted(OmegaConf.missing_keys(cfg.policy))
    assert not missing, f"policy={name} requires {missing}: add how to fill them to REQUIRED_VALUES"
    if "device" in cfg.policy:
        overrides.append("policy.device=cpu")  # fast and the same on every machine
    return overrides


@pytest.mark.parametrize("name", options("policy"))
def test_policy_option_builds(name, request, tmp_path):
    cfg = compose_rollout(_policy_overrides(name, request, tmp_path))
    policy = build_policy(cfg.policy, cfg.quantization)
    try:
        assert isinstance(policy, Policy)
        assert set(policy.inputs.cameras) <= {"agentview", "wrist"}
        assert policy.info().name
    finally:
        policy.close()


# ---------------------------------------------------------------------------- quantization
@pytest.mark.parametrize("name", options("quantization"))
def test_quantization_option_applies_to_a_tiny_torch_policy(name, request, tmp_path):
    node = OmegaConf.load(CONF / "quantization" / f"{name}.yaml")
    if node.name in ("int8", "int4"):
        pytest.importorskip("optimum.quanto")  # the CPU backend
    cfg = compose_rollout([*_policy_overrides("openvla", request, tmp_path), f"quantization={name}"])
    policy = build_policy(cfg.policy, cfg.quantization)
    try:
        assert policy.info().quantization == node.name
    finally:
        policy.close()


# ---------------------------------------------------------------------------- perturbation
def _libero_base_for(name: str) -> str | None:
    """The LIBERO env option an env-selecting perturbation (LIBERO-PRO suites) is built on, else None."""
    if not selects_env_variant(name):
        return None
    libero = [o for o in options("env") if is_libero_env(o)]
    return "libero_goal" if "libero_goal" in libero else libero[0]


@pytest.mark.parametrize("name", libero_builds_slow("perturbation", selects_env_variant))
def test_perturbation_option_wraps_and_resets(name):
    base = _libero_base_for(name)
    if base is None:  # wrappers only: robosuite Lift, one small camera so image wrappers have pixels
        env_overrides = ["env=robosuite_lift", "policy.cameras=[agentview]", "image_size=32"]
    else:
        env_overrides = [f"env={base}", "policy.cameras=[]"]
    cfg = compose_rollout([f"perturbation={name}", "perturbation.strength=0.75", "policy=random",
                           "max_steps=2", "video.enabled=false", *env_overrides])
    assert cfg.perturbation.name == name
    policy = build_policy(cfg.policy, cfg.quantization)
    env = build_env(cfg, policy)
    try:
        chain = wrapper_chain(env)
        ours = [w for w in chain if type(w).__module__.startswith("vla_gym.perturbations")]
        assert len(ours) == len(cfg.perturbation.wrappers)
        assert ours or base is not None or name == "none", "a perturbation that changes nothing"
        for w in ours:
            assert w.strength == 0.75  # ${perturbation.strength} followed the override
        obs, _ = first_reset(env, cfg)
        env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        if base is None:
            assert obs["images"]["agentview"].shape == (32, 32, 3)
        else:
            suite = OmegaConf.to_container(cfg.perturbation.env_kwargs, resolve=True)["suite"]
            assert env.unwrapped.suite_name == suite != base
    finally:
        env.close()


# ---------------------------------------------------------------------------- experiment
@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_option_composes_and_sweeps_existing_options(name):
    cfg = compose_rollout([f"experiment={name}"])
    for group in ("env", "policy", "quantization", "perturbation"):
        assert cfg.hydra.runtime.choices[group] in options(group)
    swept = OmegaConf.select(cfg, "hydra.sweeper.params")
    params = OmegaConf.to_container(swept) if swept is not None else {}
    for key, values in params.items():
        if key in COVERED_GROUPS:
            unknown = [v for v in str(values).split(",") if v.strip() not in options(key)]
            assert not unknown, f"experiment={name} sweeps {key} over missing options {unknown}"
        else:
            assert OmegaConf.select(cfg, key, default="__missing__") != "__missing__", key


# ---------------------------------------------------------------------------- tracker
@pytest.mark.parametrize("name", options("tracker"))
def test_tracker_option_composes_and_builds(name):
    from vla_gym.trackers import make_tracker

    cfg = compose_rollout([f"tracker={name}"])
    assert cfg.tracker.name == name
    tracker = make_tracker(cfg.tracker)
    assert (tracker is None) == (name == "none") and (tracker is None or callable(tracker.log_run))
