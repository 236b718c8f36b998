"""The episode plan of a rollout config, validated before anything is built or written.

:func:`plan_run` turns a config into the list of episodes it asks for (task, episode index,
seed, initial state, scene) or raises :class:`ConfigError` with one line saying what is wrong
and how to fix it. Task and suite names come from the env's own suite -- the registered env's
kwargs overridden by ``env.kwargs`` and ``perturbation.env_kwargs`` exactly as
:func:`vla_gym.build.make_env` passes them -- so a LIBERO-PRO run
(``perturbation=libero_pro_with_mug``) lists, names and indexes the PRO suite's tasks, never
the base suite's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vla_gym.envs.suite import DEFAULT_SCENE_SEED, EnvSuite
from vla_gym.records import EpisodeKey, episode_key

DEFAULT_TASKS = "default"
"""``tasks: default``: what the env's suite declares (LIBERO: its first two tasks; robosuite: its one task)."""
CHECKPOINT_KEYS = ("checkpoint", "base_checkpoint")
"""Policy-config keys holding local paths that must exist before the policy is built."""


class ConfigError(ValueError):
    """A config that cannot run; the message is one line naming the key and the fix."""


@dataclass(frozen=True)
class PlannedEpisode:
    """One episode a run asks for."""

    task_index: int
    task: str
    episode_index: int
    seed: int
    init_state_id: int | None
    scene: dict[str, Any] | None
    record_video: bool
    suite: str

    @property
    def key(self) -> EpisodeKey:
        """The episode's identity in a run (suite, task, episode, init state, scene)."""
        return episode_key(self.suite, self.task_index, self.episode_index, self.init_state_id, self.scene)


@dataclass
class Plan:
    """What a validated config runs."""

    env: EnvSuite
    """What the env family declared (tasks, step limit, scene seeding)."""
    suite: str
    tasks: list[int]
    task_names: dict[int, str]
    scene: dict[str, Any] | None
    episodes: list[PlannedEpisode] = field(default_factory=list)
    shard: str | None = None
    """``"i/n"`` when the episodes are one shard of the full plan."""


def parse_shard(spec: Any) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; None -> None; anything else is a :class:`ConfigError`."""
    if spec is None:
        return None
    text = str(spec).strip()
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"shard must be \"i/n\" (e.g. shard=0/4) or null, got {spec!r}")
    i, n = int(parts[0]), int(parts[1])
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"shard={text}: need n >= 1 and 0 <= i < n (shards 0/{max(n, 1)} .. {max(n, 1) - 1}/{max(n, 1)})")
    return i, n


def shard_episodes(episodes: list[PlannedEpisode], index: int, count: int) -> list[PlannedEpisode]:
    """Shard ``index`` of ``count``: every ``count``-th planned episode from ``index`` on (round robin).

    Round robin over the plan's order (task by task, episode by episode) spreads every task over
    all shards; the shards are disjoint and together are the whole plan.
    """
    return episodes[index::count]


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def env_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The config's env constructor kwargs over the registered ones: ``env.kwargs``, then the perturbation's."""
    kwargs = dict(_plain(cfg.env.kwargs) or {})
    kwargs.update(_plain(cfg.perturbation.env_kwargs) or {})
    return kwargs


def env_suite(cfg: DictConfig) -> EnvSuite:
    """What the env family of ``cfg.env.id`` declares about the suite it runs (no env is built).

    The suite and its task names are the env's own -- its registered kwargs overridden by
    ``env.kwargs`` and ``perturbation.env_kwargs`` exactly as :func:`vla_gym.build.make_env` passes
    them -- so a LIBERO-PRO perturbation lists and indexes the PRO suite's tasks.
    """
    import vla_gym.envs  # noqa: F401  (registers vla_gym's ids)
    from vla_gym.envs.suite import SuiteError, describe

    try:
        return describe(str(cfg.env.id), env_kwargs(cfg))
    except SuiteError as e:
        raise ConfigError(str(e)) from None


def suite_task_names(cfg: DictConfig) -> list[str]:
    """The env's tasks in index order, from its suite's declaration (no env is built)."""
    return list(env_suite(cfg).tasks)


def resolve_tasks(cfg: DictConfig, suite: EnvSuite | None = None) -> list[int]:
    """Task indices to run, from ``tasks`` (``default``, null/``all``, an index, a name or a list)."""
    suite = suite or env_suite(cfg)
    names = list(suite.tasks)
    spec = cfg.tasks
    if spec == DEFAULT_TASKS:
        return list(suite.default_tasks)
    if spec is None or spec == "all":
        return list(range(len(names)))
    items = list(spec) if isinstance(spec, (list, tuple)) or OmegaConf.is_list(spec) else [spec]
    if not items:
        raise ConfigError("tasks is an empty list; use tasks=all, an index, a name or a list of them")
    out: list[int] = []
    for t in items:
        idx = _task_index(cfg, suite, t)
        if idx not in out:
            out.append(idx)
    return out


def _task_index(cfg: DictConfig, suite: EnvSuite, t: Any) -> int:
    names = list(suite.tasks)
    if isinstance(t, bool) or not isinstance(t, (int, str)):
        raise ConfigError(f"tasks: {t!r} is neither a task index nor a task name")
    if isinstance(t, int) or t.isdigit():
        idx = int(t)
        if 0 <= idx < len(names):
            return idx
        if len(names) == 1:
            raise ConfigError(f"tasks={t} does not apply to {cfg.env.id}: a {suite.name} env has one task "
                              f"({names[0]}, index 0); drop the tasks override or use tasks=0")
        raise ConfigError(f"tasks: task index {idx} out of range for {suite.name} (0..{len(names) - 1})")
    if t in names:
        return names.index(t)
    import difflib

    hint = difflib.get_close_matches(t, names, n=1)
    raise ConfigError(f"tasks: unknown task {t!r} in {suite.name}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                      + f" (valid: indices 0..{len(names) - 1} or the suite's task names)")


def _num_init_states(suite: EnvSuite, task_index: int) -> int:
    try:
        return int(suite.init_states(task_index))
    except (FileNotFoundError, OSError, ValueError) as e:
        raise ConfigError(str(e).replace("\n", " ")) from None


def resolve_scene_seed(cfg: DictConfig, policy: Any, suite: EnvSuite | None = None) -> int:
    """S of the reference scene stream: ``scene.seed``, else the policy's (class's) reference eval's,
    else the suite's declared default (:data:`DEFAULT_SCENE_SEED` when no suite is given)."""
    if cfg.scene.seed is not None:
        return int(cfg.scene.seed)
    declared = getattr(policy, "reference_scene_seed", None)
    if declared is not None:
        return int(declared)
    return int(suite.default_scene_seed if suite is not None else DEFAULT_SCENE_SEED)


def check_policy_paths(policy_cfg: Any) -> None:
    """Local checkpoint paths of the policy config (:data:`CHECKPOINT_KEYS`) exist; required ones are set."""
    if not isinstance(policy_cfg, DictConfig):
        return
    present = set(policy_cfg.keys())  # `in` is False for a missing (???) value
    for key in CHECKPOINT_KEYS:
        if key not in present:
            continue
        if OmegaConf.is_missing(policy_cfg, key):
            raise ConfigError(f"policy.{key} is required: add policy.{key}=/path/to/checkpoint")
        value = policy_cfg[key]
        if value is None:
            continue
        path = Path(str(value)).expanduser()
        if not path.exists():
            raise ConfigError(f"policy.{key}: no such file or directory: {path}")


def egl_device_count() -> int | None:
    """EGL devices this process can see (``eglQueryDevicesEXT``; no display or context is created),
    or None where the EGL backend is not in use or cannot be queried."""
    import os

    if os.environ.get("MUJOCO_GL", "").lower() != "egl":
        return None
    try:
        from mujoco.egl import egl_ext

        return len(egl_ext.eglQueryDevicesEXT())
    except Exception:  # no libEGL / no device-enumeration extension: the workers will say
        return None


def check_egl_devices(devices: Any) -> None:
    """``worker_egl_devices`` are device indices that exist, checked before any worker starts.

    A wrong index otherwise fails inside every worker's first render, episode after episode.
    """
    if devices is None:
        return
    ids = list(devices)
    if not ids or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in ids):
        raise ConfigError(f"worker_egl_devices must be a non-empty list of EGL device indices >= 0 (or null), got {ids}")
    count = egl_device_count()
    if count is not None and max(ids) >= count:
        raise ConfigError(f"worker_egl_devices {ids}: this machine has {count} EGL device(s), indices 0..{count - 1} "
                          "(MUJOCO_EGL_DEVICE_ID counts EGL devices, which may differ from CUDA's order)")


MIN_IMAGE_SIDE = 16
"""Smallest camera / video panel side accepted (smaller renders nothing a policy or a viewer can use)."""
MAX_SEED = 2**32 - 1
"""Episode seeds (``seed + e``) seed NumPy and the simulators: they must fit an unsigned 32-bit int."""


def _at_least(cfg: DictConfig, key: str, low: float, null_ok: bool = False, what: str = "") -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and null_ok:
        return
    if value is None or isinstance(value, bool) or float(value) < low or float(value) != float(value):
        raise ConfigError(f"{key} must be >= {low:g}{' (or null ' + what + ')' if null_ok else ''}, got {value}")


def check_values(cfg: DictConfig) -> None:
    """Value checks the schema's types cannot express, for every key a run reads (one line each).

    Runs before anything is fingerprinted or written, so a bad value never becomes part of a run
    directory (which would then refuse the corrected command).
    """
    from vla_gym.envs.base import RENDER_QUALITIES
    from vla_gym.envs.suite import SCENE_SEEDINGS
    from vla_gym.policy import CHUNK_MODES

    n_eps = int(cfg.episodes_per_task)
    if n_eps < 1:
        raise ConfigError(f"episodes_per_task must be >= 1, got {n_eps}")
    if not 0 <= int(cfg.seed) <= MAX_SEED - n_eps:
        raise ConfigError(f"seed must be >= 0 and seed + episodes_per_task <= {MAX_SEED}, got seed={cfg.seed}")
    if cfg.render_quality not in RENDER_QUALITIES:
        raise ConfigError(f"render_quality must be one of {list(RENDER_QUALITIES)}, got {cfg.render_quality!r}")
    if cfg.scene.seeding not in SCENE_SEEDINGS:
        raise ConfigError(f"scene.seeding must be one of {list(SCENE_SEEDINGS)}, got {cfg.scene.seeding!r}")
    _at_least(cfg, "scene.seed", 0, null_ok=True, what="for the policy's reference seed")
    _at_least(cfg, "image_size", MIN_IMAGE_SIDE, null_ok=True, what="for the policy's size")
    _at_least(cfg, "video.size", MIN_IMAGE_SIDE)
    _at_least(cfg, "video.fps", 1)
    _at_least(cfg, "video.max_per_task", 0)
    if not str(cfg.video.camera).strip():
        raise ConfigError("video.camera must name a camera (e.g. agentview), got an empty string")
    if cfg.chunk.mode is not None and cfg.chunk.mode not in CHUNK_MODES:
        raise ConfigError(f"chunk.mode must be one of {list(CHUNK_MODES)} (or null for the policy's), "
                          f"got {cfg.chunk.mode!r}")
    _at_least(cfg, "chunk.replan_steps", 1, null_ok=True, what="for the policy's default")
    _at_least(cfg, "chunk.k", 0)
    strength = float(cfg.perturbation.strength)
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"perturbation.strength must be in [0, 1], got {cfg.perturbation.strength}")
    if cfg.perturbation.name == "none" and strength != 0.0:
        raise ConfigError(f"perturbation.strength applies only with a perturbation (perturbation=none here); "
                          f"pick one, e.g. perturbation=action_noise perturbation.strength={strength:g}")
    _at_least(cfg, "max_steps", 1, null_ok=True, what="for the suite's limit")
    _at_least(cfg, "num_envs", 1)
    if cfg.get("worker_start_method", "spawn") not in ("spawn", "forkserver"):
        raise ConfigError(f"worker_start_method must be spawn or forkserver (fork would share robosuite's EGL state "
                          f"and the run-dir lock with the workers), got {cfg.worker_start_method!r}")
    if cfg.get("worker_timeout_s") is not None and float(cfg.worker_timeout_s) <= 0:
        raise ConfigError(f"worker_timeout_s must be > 0 (or null for no watchdog), got {cfg.worker_timeout_s}")
    _at_least(cfg, "batch_wait_ms", 0, null_ok=True, what="for the policy's")
    check_egl_devices(cfg.get("worker_egl_devices"))
    check_execution(cfg)


def check_execution(cfg: DictConfig) -> Any:
    """The validated :class:`~vla_gym.execution.ExecutionConfig` of ``cfg`` (a :class:`ConfigError` line if bad)."""
    from vla_gym.execution import load_execution

    try:
        return load_execution(cfg.get("execution"))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def plan_run(cfg: DictConfig, policy_cls: Any = None) -> Plan:
    """Validate ``cfg`` and list its episodes; raises :class:`ConfigError` (one line) on any problem.

    ``policy_cls`` (the policy class, or a built policy) supplies the declared reference scene seed.
    """
    check_values(cfg)
    n_eps = int(cfg.episodes_per_task)
    shard = parse_shard(cfg.get("shard"))
    check_policy_paths(cfg.policy)
    env = env_suite(cfg)
    suite, names = env.name, list(env.tasks)
    tasks = resolve_tasks(cfg, env)
    init_ids = list(cfg.init_state_ids) if cfg.init_state_ids is not None else None
    fixed_states = env.init_states is not None
    if not fixed_states and init_ids is not None:
        raise ConfigError(f"init_state_ids applies only to suites with fixed initial states (LIBERO); {cfg.env.id} "
                          "has none (episode e uses seed + e): drop init_state_ids")
    if init_ids is not None and len(init_ids) < n_eps:
        raise ConfigError(f"init_state_ids has {len(init_ids)} ids for {n_eps} episodes per task")
    if fixed_states:
        wanted = [int(init_ids[ep]) if init_ids else ep for ep in range(n_eps)]
        for t in tasks:
            n = _num_init_states(env, t)
            bad = [i for i in wanted if not 0 <= i < n]
            if bad:
                src = "init_state_ids" if init_ids else f"episodes_per_task={n_eps} (episode e uses init state e)"
                raise ConfigError(f"{src}: init state {bad[0]} out of range for {suite} task {t} "
                                  f"({n} initial states: 0..{n - 1})")
    scene = None
    if env.scene_seeding:
        scene = {"seeding": str(cfg.scene.seeding), "seed": resolve_scene_seed(cfg, policy_cls, env)}
    plan = Plan(env=env, suite=suite, tasks=tasks, task_names={t: names[t] for t in tasks}, scene=scene)
    for t in tasks:
        for ep in range(n_eps):
            init_id = (int(init_ids[ep]) if init_ids else ep) if fixed_states else None
            ep_scene = None
            if scene is not None:
                ep_scene = {**scene, "index": init_id if scene["seeding"] == "reference" else None}
            plan.episodes.append(PlannedEpisode(
                task_index=t, task=names[t], episode_index=ep, seed=int(cfg.seed) + ep, init_state_id=init_id,
                scene=ep_scene, record_video=bool(cfg.video.enabled) and ep < int(cfg.video.max_per_task),
                suite=suite,
            ))
    if shard is not None:
        plan.episodes = shard_episodes(plan.episodes, *shard)
        plan.shard = f"{shard[0]}/{shard[1]}"
    return plan
