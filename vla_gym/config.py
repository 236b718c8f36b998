"""Typed schema of the rollout config and early validation of command-line overrides.

Hydra type-checks YAML merged onto these dataclasses (``conf/rollout.yaml`` lists
``rollout_schema`` first in its defaults), so ``episodes_per_task=two`` fails at once.
:func:`check_overrides` adds what Hydra's own message lacks for a misspelt key: the list of
valid keys and the closest match.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from vla_gym.execution import ExecutionConfig


@dataclass
class EnvConfig:
    """Which env: a registered Gymnasium id (its family declares its suite: ``vla_gym.envs.suite``)."""

    id: str = "vla_gym/LiberoSpatial-v1"
    kind: str = ""
    """Informational label of the family (``libero``, ``robosuite``); the runner never reads it."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``gymnasium.make`` (e.g. ``render_size``)."""


@dataclass
class ChunkConfig:
    """How action chunks are executed (see :mod:`vla_gym.chunking`)."""

    mode: Optional[str] = None
    """``open_loop`` or ``temporal_ensemble``; null = the policy's declared ``Policy.execution.mode``."""
    replan_steps: Optional[int] = None
    k: float = 0.01


@dataclass
class VideoConfig:
    """Per-episode videos: policy views beside a third-person view, instruction on top."""

    enabled: bool = True
    fps: int = 20
    size: int = 256
    max_per_task: int = 10
    camera: str = "agentview"


@dataclass
class SceneConfig:
    """How LIBERO scenes (fixture placements) are seeded; see ``vla_gym.envs.libero``."""

    seeding: str = "reference"
    """``reference``: init state k in the reference evals' k-th scene; ``per_episode``: from the episode seed."""
    seed: Optional[int] = None
    """S of ``env.seed(S)`` in the reference loop; null = the policy class's ``reference_scene_seed``, else 0."""


@dataclass
class TrajectoryConfig:
    """Per-step trajectory records (:mod:`vla_gym.trajectory`), one ``.npz`` per episode."""

    enabled: bool = False


@dataclass
class PerturbationConfig:
    """A named perturbation: Gymnasium wrappers (``_target_`` nodes) applied to the env."""

    name: str = "none"
    strength: float = 0.0
    wrappers: list[Any] = field(default_factory=list)
    env_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RolloutConfig:
    """Top level of ``conf/rollout.yaml``; each field is documented there."""

    env: EnvConfig = field(default_factory=EnvConfig)
    policy: Any = None
    quantization: Any = None
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    tracker: Any = None
    """Where a finished run is also logged (``conf/tracker/``: none, wandb, tensorboard); never fingerprinted."""
    tasks: Any = "default"
    episodes_per_task: int = 2
    init_state_ids: Optional[list[int]] = None
    seed: int = 7
    max_steps: Optional[int] = None
    image_size: Optional[int] = None
    render_quality: str = "reference"
    scene: SceneConfig = field(default_factory=SceneConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    """Execution timing (``conf/execution/``, :mod:`vla_gym.execution`): what the robot does while the
    policy computes; ``synchronous`` (default) = the world is frozen, today's results bit for bit."""
    num_envs: int = 1
    """Env worker processes (1 = episodes one after another in this process); one batched policy call per step."""
    worker_start_method: str = "spawn"
    """``spawn`` or ``forkserver`` (never ``fork``: robosuite's EGL state and the run-dir lock must not be inherited)."""
    worker_timeout_s: Optional[float] = None
    """Stall watchdog: a worker with no reply for this long is killed, its episode an ``error``, and replaced."""
    worker_egl_devices: Optional[list[int]] = None
    """``MUJOCO_EGL_DEVICE_ID`` per worker (slot i gets item i mod len); null = the default device."""
    batch_wait_ms: Optional[float] = None
    """With ``num_envs > 1``: how long an env needing a chunk waits for envs mid-step to share one
    policy call; null = the policy's ``batch_wait_ms`` (torch models: until all reply; 0 for
    scripted/random/replay). Never changes an episode's outcome, only who shares a call."""
    shard: Optional[str] = None
    """``"i/n"``: run only shard i of n of the planned episodes (round robin); merge with ``vla_gym.merge``."""
    retry_errors: bool = True
    """On resume, re-run episodes whose record has an ``error`` (earlier errors kept in ``extra.previous_errors``)."""
    policy_version: Optional[str] = None
    """What identifies the policy's weights when no checkpoint file does (e.g. the training step):
    part of the run's fingerprint, so a run dir is never resumed with other weights."""
    output_dir: str = "rollouts/latest"


def path_safe(text: str) -> str:
    """``text`` as one directory name: ``/`` (in ``shard=1/2``, checkpoint paths) escaped as ``%2F``.

    Multirun job dirs are named after their overrides; unescaped, ``shard=1/2`` nested the job's
    output one level down (``1_...shard=1/2,video.enabled=False``), away from its siblings.
    """
    return text.replace("%", "%25").replace("/", "%2F")


def register_configs() -> None:
    """Store the schema in Hydra's ConfigStore and the ``path_safe`` resolver (both idempotent)."""
    ConfigStore.instance().store(name="rollout_schema", node=RolloutConfig)
    if not OmegaConf.has_resolver("path_safe"):
        OmegaConf.register_new_resolver("path_safe", path_safe)


# At import too: a launcher's worker (Ray, submitit) resolves the job's output dir after unpickling
# the task function, i.e. after importing this module, but without running the CLI's main().
register_configs()


CONFIG_MODULE = "vla_gym.conf"
GROUPS = ("env", "policy", "quantization", "perturbation", "tracker", "execution", "experiment", "hydra/launcher")


def _keys(cfg: Any, prefix: str = "") -> list[str]:
    if not isinstance(cfg, DictConfig):
        return []
    out = []
    for k in cfg.keys():
        path = f"{prefix}{k}"
        out.append(path)
        out.extend(_keys(cfg._get_node(k), path + "."))  # no interpolation resolution
    return out


def check_overrides(overrides: list[str], config_name: str = "rollout") -> None:
    """Fail fast, naming valid keys, when an override sets a key the config does not have.

    Group choices (``policy=openvla``) are left to Hydra, which lists the available options.
    Raises ``SystemExit`` with the message for the command-line entry point.
    """
    from hydra import compose, initialize_config_module

    plain = []
    group_choices = []
    for o in overrides:
        if "=" not in o or o.startswith(("+", "~", "hydra.", "hydra/")):
            continue
        key = o.split("=", 1)[0].lstrip("+")
        (group_choices if key in GROUPS else plain).append((key, o))
    if not plain:
        return
    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=[o for _, o in group_choices])
        except Exception:  # a bad group choice: let Hydra report it with its options
            return
    valid = [k for k in _keys(cfg) if not k.startswith("hydra")]
    for key, _ in plain:
        if key in valid or OmegaConf.select(cfg, key, default="__missing__") != "__missing__":
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        siblings = sorted(k.rsplit(".", 1)[-1] for k in valid if (k.rsplit(".", 1)[0] if "." in k else "") == parent)
        hint = difflib.get_close_matches(key, valid, n=1)
        raise SystemExit(
            f"error: unknown config key {key!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + f"\nvalid keys{' under ' + repr(parent) if parent else ''}: {', '.join(siblings)}"
            + "\n(to add a new key on purpose, prefix it with '+')"
        )
