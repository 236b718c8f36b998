"""``python -m vla_gym.rollout``: evaluate a policy on env tasks, with videos and results.

Composed by Hydra from ``conf/`` (env x policy x quantization x perturbation). The config is
validated and its episodes listed first (:mod:`vla_gym.plan`: a bad config exits with one line
and writes nothing); the run directory is then locked and checked (:mod:`vla_gym.run_store`),
the policy built, and for every pending episode: reset the env and the policy together, execute
action chunks through :mod:`vla_gym.chunking` until success or the step limit, then store the
episode in ``episodes.jsonl``, rewrite ``results.json`` atomically and write its video.

Re-running into the same output directory resumes: finished episodes are skipped, errored ones
are retried (``retry_errors``). A crash inside one episode (e.g. MuJoCo instability) is recorded
as that episode's ``error`` and the run goes on with a fresh env.

``num_envs=1`` runs the episodes here, one after another; ``num_envs > 1`` runs them in env
worker processes (:mod:`vla_gym.parallel`) with one batched policy call per step, to the same
records. ``shard=i/n`` runs one shard of the plan. :func:`evaluate` is the in-process entry
point (the CLI is a thin Hydra layer over :func:`run`, as is it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vla_gym.chunking import ChunkedActor
from vla_gym.config import CONFIG_MODULE, check_overrides, register_configs
from vla_gym.plan import (
    DEFAULT_SCENE_SEED, ConfigError, Plan, PlannedEpisode, plan_run, resolve_scene_seed, resolve_tasks,
)
from vla_gym.policy import Policy
from vla_gym.results import EpisodeRecord, atomic_write_text
from vla_gym.trackers import track_run
from vla_gym.trajectory import Trajectory, trajectory_rel
from vla_gym.run_store import EPISODES_FILE, RESULTS_FILE, RUN_FILE, RunStore, RunStoreError, outcome_config

log = logging.getLogger("vla_gym.rollout")

__all__ = [
    "DEFAULT_SCENE_SEED", "EPISODES_FILE", "RESULTS_FILE", "RUN_FILE", "build_policy", "chunk_execution",
    "compose_config", "evaluate", "format_summary", "main", "make_env", "resolve_scene_seed", "resolve_tasks", "run",
    "run_episode",
]


# ---------------------------------------------------------------------------- building
def _policy_class(target: str) -> type:
    """The class a ``_target_`` builds: the class itself, or the owner of a classmethod such as ``from_pretrained``."""
    from hydra.utils import get_method

    obj = get_method(target)
    owner = obj if isinstance(obj, type) else getattr(obj, "__self__", None)
    if not isinstance(owner, type) or not issubclass(owner, Policy):
        raise ValueError(f"policy _target_ {target!r} is neither a vla_gym Policy class nor one of its classmethods")
    return owner


def build_policy(policy_cfg: DictConfig, quantization_cfg: Any) -> Policy:
    """Instantiate the policy; policies that declare ``loads_weights`` get ``quantization=`` explicitly."""
    from hydra.utils import instantiate

    cfg = OmegaConf.to_container(policy_cfg, resolve=True)
    q = OmegaConf.to_container(quantization_cfg, resolve=True) if quantization_cfg is not None else None
    q_name = (q or {}).get("name", "none")
    target = cfg.get("_target_")
    if not target:
        raise ValueError("the policy config has no _target_; pick one with policy=<name> (see conf/policy/)")
    cls = _policy_class(target)
    if cls.loads_weights:
        cfg["quantization"] = q
    elif q_name != "none":
        raise ValueError(
            f"quantization={q_name} applies to torch policies only; {target} does not load weights. "
            "Use quantization=none with this policy."
        )
    policy = instantiate(cfg)
    if not isinstance(policy, Policy):
        raise TypeError(f"{target} built a {type(policy).__name__}, not a vla_gym.policy.Policy")
    return policy


def chunk_execution(cfg: DictConfig, policy: Policy) -> dict[str, Any]:
    """Chunk execution: the policy's declared defaults, overridden by explicit ``chunk.*`` values."""
    declared = policy.execution
    mode = cfg.chunk.mode or declared.mode
    replan = cfg.chunk.replan_steps if cfg.chunk.replan_steps is not None else declared.replan_steps
    return {"mode": str(mode), "replan_steps": replan, "k": float(cfg.chunk.k)}


def batch_wait_ms(cfg: DictConfig, policy: Policy) -> float | None:
    """How long parallel envs wait to share a policy call: ``batch_wait_ms``, else the policy's declaration."""
    value = cfg.get("batch_wait_ms")
    return policy.batch_wait_ms if value is None else float(value)


def make_env(cfg: DictConfig, task_index: int, policy: Any, record_video: bool, scene_seed: int = 0):
    """Build the env the policy needs: its cameras at its size, video view, perturbations.

    ``policy`` is the policy or just its :class:`~vla_gym.policy.PolicyInputs` (what an env
    worker process gets: the policy itself stays in the parent).
    """
    import gymnasium as gym
    from hydra.utils import instantiate

    inputs = getattr(policy, "inputs", policy)
    kwargs: dict[str, Any] = dict(
        cameras=tuple(inputs.cameras),
        image_size=int(cfg.image_size or inputs.image_size),
        privileged=inputs.uses_privileged,
        render_mode="rgb_array" if record_video else None,
        render_camera=cfg.video.camera,
        render_size=int(cfg.video.size),
        render_quality=str(cfg.render_quality),
    )
    if cfg.env.kind == "libero":
        kwargs["task"] = task_index
        kwargs["scene_seeding"] = str(cfg.scene.seeding)
        kwargs["scene_seed"] = int(scene_seed)
    if cfg.max_steps is not None:
        kwargs["max_episode_steps"] = int(cfg.max_steps)
    kwargs.update(OmegaConf.to_container(cfg.env.kwargs, resolve=True))
    kwargs.update(OmegaConf.to_container(cfg.perturbation.env_kwargs, resolve=True))
    env = gym.make(cfg.env.id, **kwargs)
    for wrapper_cfg in cfg.perturbation.wrappers:
        env = instantiate(wrapper_cfg, env=env)
    return env


# ---------------------------------------------------------------------------- episodes
def run_episode(env, actor: ChunkedActor, *, seed: int, init_state_id: int | None, record_video: bool,
                video_size: int, cameras: tuple[str, ...],
                trajectory: Any = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Run one episode of env 0 of ``actor``; return its measurements and (if recording) the video frames.

    ``trajectory`` (a :class:`vla_gym.trajectory.Trajectory`) is filled step by step when given.
    """
    from vla_gym.video import compose_frame

    options = {"init_state_id": init_state_id} if init_state_id is not None else None
    obs, info = env.reset(seed=seed, options=options)
    actor.reset(env_ids=[0], seeds=[seed])
    instruction = obs["instruction"]
    frames: list[np.ndarray] = []
    latencies: list[float] = []
    stage_ms: dict[str, list[float]] = {}
    steps, total_reward, success = 0, 0.0, bool(info.get("is_success", False))

    def snapshot(status: str) -> None:
        if record_video:
            panels = [obs["images"][c] for c in cameras] + [env.render()]
            frames.append(compose_frame(panels, instruction, video_size, footer=status))

    snapshot("t=0")
    if trajectory is not None:
        trajectory.observe(obs)
    terminated = truncated = success
    while not (terminated or truncated):
        action = actor.step({0: obs})[0]
        if actor.last_call is not None:
            latencies.append(actor.last_call["wall_ms"])
            for stage, ms in actor.last_call["info"].get("timing_ms", {}).items():
                stage_ms.setdefault(str(stage), []).append(float(ms))
        obs, reward, terminated, truncated, info = env.step(action)
        steps += 1
        total_reward += float(reward)
        success = bool(info.get("is_success", False))
        if trajectory is not None:
            trajectory.step(action, actor.last_call is not None, reward, success, obs)
        snapshot(f"t={steps}" + (" SUCCESS" if success else ""))
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    result = dict(
        instruction=instruction, success=success, steps=steps, sum_reward=total_reward,
        latency_ms_mean=float(lat.mean()), latency_ms_p95=float(np.percentile(lat, 95)),
        policy_queries=len(latencies), init_state_id=info.get("init_state_id", init_state_id),
        policy_timing_ms={stage: float(np.mean(v)) for stage, v in stage_ms.items()},
    )
    return result, frames


def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table of per-task and overall success rates, with errored episodes beside them."""
    rows = [("task", "success", "errors", "rate", "95% CI", "mean steps")]

    def row(name: str, s: dict[str, Any]) -> tuple[str, ...]:
        return (name, f"{s['successes']}/{s['episodes']}", str(s.get("errors", 0)), f"{s['pc_success']:.1f}%",
                f"[{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]", f"{s['mean_steps']:.0f}")

    for s in results["per_task"].values():
        rows.append(row(s["task"] if len(s["task"]) <= 70 else s["task"][:69] + "…", s))
    rows.append(row("overall", results["overall"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().replace("\n", " ") or type(e).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def run(cfg: DictConfig, choices: dict[str, str] | None = None, policy: Policy | None = None,
        tracking: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.policy`` on ``cfg.env``; return the aggregated results.

    ``choices`` are Hydra's config-group choices (``policy: openvla``), used to name things.
    ``policy``: an already built policy to evaluate instead of building ``cfg.policy`` (what
    :func:`evaluate` passes; it stays open: the caller owns it).
    ``tracking``: keyword arguments for :func:`vla_gym.trackers.track_run` (``wandb_run``, ``wandb_step``).
    Raises :class:`~vla_gym.plan.ConfigError` (bad config, policy that cannot be built) or
    :class:`~vla_gym.run_store.RunStoreError` (directory locked or of another config) before
    anything is written into the run directory.
    """
    target = cfg.policy.get("_target_") if isinstance(cfg.policy, DictConfig) else None
    if policy is not None:
        policy_cls: Any = type(policy)
    else:
        if not target:
            raise ConfigError("the policy config has no _target_; pick one with policy=<name> (see conf/policy/)")
        try:
            policy_cls = _policy_class(target)
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(f"policy._target_ {target!r}: {_one_line(e)}") from None
    plan = plan_run(cfg, policy_cls)
    out = Path(cfg.output_dir)
    store = RunStore(out, outcome_config(cfg), retry_errors=bool(cfg.retry_errors))
    with store:  # locked from here; refused if another run holds the dir or it is of another config
        if policy is not None:
            return _run_episodes(cfg, plan, store, policy, choices, tracking)
        try:
            policy = build_policy(cfg.policy, cfg.quantization)
        except Exception as e:  # noqa: BLE001 - any failure to build is a start failure, reported in one line
            log.debug("building the policy failed:\n%s", traceback.format_exc())
            raise ConfigError(f"could not build the policy ({target}): {type(e).__name__}: {_one_line(e)}") from None
        try:
            return _run_episodes(cfg, plan, store, policy, choices, tracking)
        finally:
            policy.close()


def _flat_options(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, dict):
            out.update(_flat_options(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _has_key(cfg: DictConfig, dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return False
        node = node._get_node(part)
    return True


def compose_config(env: str = "libero_spatial", policy: str | None = None, overrides: Sequence[str] = (),
                   **options: Any) -> DictConfig:
    """The rollout config ``python -m vla_gym.rollout env=<env> policy=<policy> <overrides>`` would run,
    with ``options`` (``max_steps=10``, ``video={"enabled": False}``, ``num_envs=2``) set on top."""
    from hydra import compose, initialize_config_module

    register_configs()
    groups = [f"env={env}"] + ([f"policy={policy}"] if policy else [])
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("rollout", overrides=[*groups, *overrides])
    for key, value in _flat_options(options).items():
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        # policy configs and kwargs dicts are open (any key); everything else must exist in the schema
        if not _has_key(cfg, key) and not (key.startswith("policy.") or parent.endswith("kwargs")):
            raise ConfigError(f"evaluate(): unknown config key {key!r}")
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def evaluate(policy: Policy | str, env: str = "libero_spatial", tasks: Any = "default", episodes: int = 2,
             output_dir: str | os.PathLike | None = None, *, overrides: Sequence[str] = (),
             wandb_run: Any = None, wandb_step: int | None = None, **options: Any) -> dict[str, Any]:
    """Evaluate a policy from Python (e.g. during training): the CLI's episode loop and run store.

    Args:
        policy: A built :class:`~vla_gym.policy.Policy` (left open: the caller owns it) or the
            name of a ``conf/policy`` config (``"scripted"``), built and closed here.
        env: A ``conf/env`` config name (``libero_spatial``, ``robosuite_lift``).
        tasks: As the ``tasks`` key: ``default``, ``all``, an index, a name or a list.
        episodes: Episodes per task.
        output_dir: The run directory (default ``rollouts/evaluate/<time>``); re-using one resumes it.
        overrides: Hydra override strings, as on the command line (``"perturbation=action_noise"``).
        wandb_run: An existing W&B run (e.g. the training run) to log the results into, under
            ``eval/`` (not finished here); ``tracker=...`` in ``overrides`` logs to a run of its own.
        wandb_step: The step of ``wandb_run`` to log at (e.g. the training step); None = its next.
        **options: Config values by key; nested dicts for groups (``video={"enabled": False}``,
            ``max_steps=50``, ``num_envs=2``, ``shard="0/2"``).

    Returns:
        The ``results.json`` dict (``per_task``, ``per_group``, ``overall``, ``meta``, ``video_paths``).

    Raises:
        ConfigError: The config cannot run (one-line message, nothing written).
        RunStoreError: The output dir is locked by another run or holds another config's run.
    """
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    if output_dir is None:
        output_dir = Path("rollouts") / "evaluate" / time.strftime("%Y-%m-%d/%H-%M-%S")
    built = None if isinstance(policy, str) else policy
    if built is not None and not isinstance(built, Policy):
        raise TypeError(f"policy must be a vla_gym Policy or a conf/policy name, got {type(policy).__name__}")
    cfg = compose_config(env, policy if isinstance(policy, str) else None, overrides,
                         tasks=tasks, episodes_per_task=int(episodes), output_dir=str(output_dir), **options)
    choices = {"env": env}
    if built is not None:
        cls = type(built)
        # what the fingerprint records for a policy object: its class and its own description
        OmegaConf.update(cfg, "policy", {"_target_": f"{cls.__module__}.{cls.__qualname__}",
                                         "info": json.loads(json.dumps(asdict(built.info()), default=str))},
                         merge=False)
        choices["policy"] = built.info().name
    else:
        choices["policy"] = str(policy)
    return run(cfg, choices, policy=built, tracking={"wandb_run": wandb_run, "wandb_step": wandb_step})


def _run_episodes(cfg: DictConfig, plan: Plan, store: RunStore, policy: Policy,
                  choices: dict[str, str] | None, tracking: dict[str, Any] | None = None) -> dict[str, Any]:
    """The episode loop of :func:`run`, once the store is open and the policy built."""
    from tqdm import tqdm

    out = store.dir
    chunk = chunk_execution(cfg, policy)
    wait_ms = batch_wait_ms(cfg, policy)
    actor = ChunkedActor(policy, num_envs=1, **chunk)  # num_envs > 1: one per worker slot (below)
    policy_info = asdict(policy.info())
    policy_name = (choices or {}).get("policy") or policy_info["name"]
    meta = {
        "env": cfg.env.id, "suite": plan.suite, "policy": policy_name,
        "quantization": (cfg.quantization or {}).get("name", "none"),
        "perturbation": cfg.perturbation.name, "perturbation_strength": float(cfg.perturbation.strength),
        "seed": int(cfg.seed), "config_fingerprint": store.fingerprint, "policy_info": policy_info,
        "chunk": chunk, "scene": plan.scene, "num_envs": int(cfg.num_envs), "shard": plan.shard,
        "batch_wait_ms": wait_ms,
    }
    store.start(env=cfg.env.id, suite=plan.suite)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    store.write_results(meta)  # from the start on, results.json always exists and is whole
    pending = [e for e in plan.episodes if not store.is_done(e.key)]
    retried = sum(store.get(e.key) is not None for e in pending)
    if retried:
        log.info("retrying %d errored episode(s) (retry_errors=true)", retried)
    total = len(plan.episodes)
    bar = tqdm(total=total, initial=total - len(pending), desc="episodes", unit="ep", dynamic_ncols=True)
    scene_seed = (plan.scene or {}).get("seed", 0)

    def store_episode(ep: PlannedEpisode, res: dict[str, Any], error: str | None, video_rel: str | None,
                      names: tuple[str, str] | None, wall_s: float, trajectory: Any = None) -> None:
        suite, task_name = names or (plan.suite, ep.task)
        if (suite, task_name) != (plan.suite, ep.task):
            log.warning("env reports %s/%s where the plan has %s/%s", suite, task_name, plan.suite, ep.task)
        extra: dict[str, Any] = {}
        if ep.scene is not None:
            extra["scene"] = ep.scene
        if res.get("policy_timing_ms"):
            extra["policy_timing_ms"] = res["policy_timing_ms"]
        if trajectory is not None and error is None:
            extra["trajectory"] = trajectory_rel(task_name, ep.episode_index)
            trajectory.save(out / extra["trajectory"])
        record = store.add(EpisodeRecord(
            suite=suite, task=task_name, task_index=ep.task_index,
            init_state_id=ep.init_state_id, episode_index=ep.episode_index, seed=ep.seed,
            instruction=res.get("instruction", ""),
            success=bool(res.get("success", False)), steps=int(res.get("steps", 0)),
            sum_reward=float(res.get("sum_reward", 0.0)), wall_s=wall_s,
            latency_ms_mean=res.get("latency_ms_mean", 0.0), latency_ms_p95=res.get("latency_ms_p95", 0.0),
            policy_queries=res.get("policy_queries", 0), video=video_rel, error=error, extra=extra,
            policy=policy_name, perturbation=cfg.perturbation.name,
            perturbation_strength=float(cfg.perturbation.strength),
        ))
        if record.extra.get("previous_errors"):
            log.info("episode %d of task %d retried: %s", ep.episode_index, ep.task_index,
                     "error again" if error else "ok")
        store.write_results(meta)
        bar.update(1)
        n_ok = sum(r.success for r in store.records)
        n_err = sum(r.error is not None for r in store.records)
        bar.set_postfix(success=f"{n_ok}/{len(store.records)}", errors=n_err)

    num_envs = min(int(cfg.num_envs), len(pending))
    try:
        if num_envs > 1:
            from vla_gym.parallel import EnvPool

            actor = ChunkedActor(policy, num_envs=num_envs, **chunk)
            with EnvPool(OmegaConf.to_container(cfg, resolve=True), policy.inputs, out, num_envs,
                         start_method=str(cfg.worker_start_method), timeout_s=cfg.worker_timeout_s,
                         egl_devices=list(cfg.worker_egl_devices) if cfg.worker_egl_devices else None,
                         batch_wait_s=None if wait_ms is None else wait_ms / 1e3) as pool:
                pool.run(pending, actor, scene_seed, on_done=store_episode,
                         trajectories=bool(cfg.trajectory.enabled))
        else:
            _run_in_process(cfg, plan, pending, policy, actor, scene_seed, out, store_episode)
    finally:
        bar.close()
    results = store.write_results(meta)
    track_run(cfg, out, results, store.records, fingerprint=store.fingerprint, **(tracking or {}))  # never raises
    return results


def _run_in_process(cfg: DictConfig, plan: Plan, pending: list[PlannedEpisode], policy: Policy,
                    actor: ChunkedActor, scene_seed: int, out: Path, store_episode: Any) -> None:
    """``num_envs=1``: the episodes one after another in this process, one env per task."""
    from vla_gym.video import write_video

    for task_index in plan.tasks:
        env, instruction = None, ""
        for ep in (e for e in pending if e.task_index == task_index):
            t0 = time.perf_counter()
            error, frames, res, names = None, [], {}, None
            traj = Trajectory() if cfg.trajectory.enabled else None
            try:
                if env is None:
                    env = make_env(cfg, task_index, policy, record_video=bool(cfg.video.enabled),
                                   scene_seed=scene_seed)
                    instruction = env.unwrapped.instruction
                # names from the env itself (a LIBERO-PRO suite's, not the base suite's)
                names = (str(env.unwrapped.suite_name), str(env.unwrapped.task_name))
                res, frames = run_episode(env, actor, seed=ep.seed, init_state_id=ep.init_state_id,
                                          record_video=ep.record_video, video_size=int(cfg.video.size),
                                          cameras=tuple(policy.inputs.cameras), trajectory=traj)
            except Exception as e:  # noqa: BLE001 - one broken episode must not end the run
                error, res = f"{type(e).__name__}: {e}", {"instruction": instruction}
                log.error("episode %d of task %d failed:\n%s", ep.episode_index, task_index, traceback.format_exc())
                if env is not None:
                    env.close()
                env = None  # a crashed simulator is rebuilt for the next episode
            video_rel = None
            if frames:
                outcome = "success" if res.get("success") else "failure"
                video_rel = f"videos/{(names or (None, ep.task))[1]}/ep{ep.episode_index:03d}_{outcome}.mp4"
                write_video(out / video_rel, frames, fps=int(cfg.video.fps))
            store_episode(ep, res, error, video_rel, names, time.perf_counter() - t0, traj)
        if env is not None:
            env.close()


# ---------------------------------------------------------------------------- entry point
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    choices = dict(HydraConfig.get().runtime.choices)
    try:
        results = run(cfg, choices)
    except (ConfigError, RunStoreError) as e:  # one clear line, no traceback, nothing written
        raise SystemExit(f"error: {_one_line(e)}") from None
    print(f"\n{cfg.env.id} x {choices.get('policy')}  ->  {cfg.output_dir}")
    print(format_summary(results))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: validate overrides, then hand over to Hydra."""
    import hydra

    argv = sys.argv[1:] if argv is None else argv
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    check_overrides([a for a in argv if not a.startswith("-")])
    register_configs()
    sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="rollout", version_base="1.3")(_hydra_main)()


if __name__ == "__main__":
    main()
