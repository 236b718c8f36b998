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

There is one episode loop (:class:`vla_gym.parallel.EnvPool`, the env side in
:mod:`vla_gym.env_host`): ``num_envs=1`` drives one env in this process, ``num_envs > 1`` env
worker processes with one batched policy call per step, to the same records. ``shard=i/n`` runs one shard of the plan. :func:`evaluate` is the in-process entry
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
from typing import Any, Callable, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vla_gym.build import batch_wait_ms, build_actor, build_policy, chunk_execution, make_env, policy_class
from vla_gym.build import policy_class as _policy_class  # noqa: F401  (old private name, used by tests)
from vla_gym.chunking import ChunkedActor
from vla_gym.env_host import EnvHost
from vla_gym.parallel import EnvPool
from vla_gym.config import CONFIG_MODULE, check_overrides, register_configs
from vla_gym.execution import as_meta as execution_meta
from vla_gym.plan import (
    DEFAULT_SCENE_SEED, ConfigError, Plan, PlannedEpisode, check_execution, plan_run, resolve_scene_seed,
    resolve_tasks,
)
from vla_gym.policy import Policy
from vla_gym.results import EpisodeRecord, atomic_write_text
from vla_gym.trackers import track_run
from vla_gym.trajectory import trajectory_rel
from vla_gym.weights import DEFAULT_WEIGHT_PATHS, weights_identity
from vla_gym.run_store import EPISODES_FILE, RESULTS_FILE, RUN_FILE, RunStore, RunStoreError, outcome_config

log = logging.getLogger("vla_gym.rollout")

__all__ = [
    "DEFAULT_SCENE_SEED", "EPISODES_FILE", "RESULTS_FILE", "RUN_FILE", "build_policy", "chunk_execution",
    "compose_config", "evaluate", "format_summary", "main", "make_env", "resolve_scene_seed", "resolve_tasks", "run",
    "run_episode",
]


# ---------------------------------------------------------------------------- episodes
def run_episode(env, actor: ChunkedActor, *, seed: int, init_state_id: int | None, record_video: bool,
                video_size: int, cameras: tuple[str, ...], fps: int = 20,
                trajectory: Any = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Run one episode of a built ``env`` with env 0 of ``actor``, through the runner's one loop.

    Returns the episode's measurements and (if recording) its video frames; ``trajectory`` (a
    :class:`vla_gym.trajectory.Trajectory`) is filled when given. An error in the episode is raised.
    """
    from types import SimpleNamespace

    host = EnvHost(lambda task_index, scene_seed: env, cameras, video_size, fps, out_dir=None, owns_env=False)
    done: dict[str, Any] = {}

    def on_done(ep, res, error, video, names, wall_s, traj) -> None:
        done.update(res=res, error=error, traj=traj)

    ep = SimpleNamespace(task_index=0, episode_index=0, seed=seed, init_state_id=init_state_id,
                         record_video=record_video)
    EnvPool.in_process(host).run([ep], actor, 0, on_done, trajectories=trajectory is not None)
    if done["error"] is not None:
        raise RuntimeError(done["error"])
    if trajectory is not None:
        trajectory.__dict__.update(done["traj"].__dict__)
    return done["res"], host.last_frames


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


MAIN_GUARD_FIX = ('put the call under `if __name__ == "__main__":` (env workers are spawned processes that '
                  "re-import your script; unguarded, each would start the evaluation again)")


def unguarded_main_line(path: str, lineno: int) -> bool:
    """Whether line ``lineno`` of the script ``path`` lies outside every ``if __name__ == "__main__":`` block.

    False when the source cannot be read or parsed (nothing to say then).
    """
    import ast

    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if not isinstance(node, ast.If):
            continue
        t = node.test
        guard = (isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq)
                 and {ast.dump(t.left), ast.dump(t.comparators[0])}
                 == {ast.dump(ast.Name("__name__", ast.Load())), ast.dump(ast.Constant("__main__"))})
        if guard and node.body[0].lineno <= lineno <= (node.body[-1].end_lineno or lineno):
            return False
    return True


def check_main_guard() -> None:
    """Refuse to start env workers from a script's unguarded top level (a :class:`ConfigError` with the fix).

    Spawned workers import the main script again as ``__mp_main__``; a top-level ``evaluate(...,
    num_envs=2)`` would then run in every worker, and every episode ends as ``WorkerDied``.
    """
    import inspect

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:  # REPL, notebook, `python -c`: nothing is re-imported
        return
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            if unguarded_main_line(path, frame.f_lineno):
                raise ConfigError(f"num_envs > 1 called from the top level of {path}:{frame.f_lineno}: "
                                  + MAIN_GUARD_FIX)
            return
        frame = frame.f_back


def _one_line(e: BaseException) -> str:
    text = str(e).strip().replace("\n", " ") or type(e).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def run(cfg: DictConfig, choices: dict[str, str] | None = None, policy: Policy | None = None,
        on_start: Callable[[], None] | None = None, tracking: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.policy`` on ``cfg.env``; return the aggregated results.

    ``choices`` are Hydra's config-group choices (``policy: openvla``), used to name things.
    ``policy``: an already built policy to evaluate instead of building ``cfg.policy`` (what
    :func:`evaluate` passes; it stays open: the caller owns it).
    ``on_start``: called once the run is accepted (validated, dir locked and of this config),
    before the first episode: the CLI writes ``.hydra/`` there, so a refused run changes nothing.
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
            policy_cls = policy_class(target)
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(f"policy._target_ {target!r}: {_one_line(e)}") from None
    plan = plan_run(cfg, policy_cls)
    if int(cfg.num_envs) > 1 and min(int(cfg.num_envs), len(plan.episodes)) > 1:
        check_main_guard()
    out = Path(cfg.output_dir)
    outcome = outcome_config(cfg)
    weights = weights_identity(cfg.policy, policy, cfg.get("policy_version"),
                               tuple(getattr(policy_cls, "weight_paths", DEFAULT_WEIGHT_PATHS)))
    if weights is not None:  # only when known: runs without it keep their fingerprint
        outcome["weights"] = weights
    elif policy is not None and (out / RUN_FILE).exists():
        raise RunStoreError(
            f"{out} already holds a run, and nothing identifies the weights of this {type(policy).__name__} "
            "object (no checkpoint), so resuming could return another model's results; pass "
            "policy_version=<e.g. the training step> (the same one to resume), or use a new output_dir")
    store = RunStore(out, outcome, retry_errors=bool(cfg.retry_errors))
    with store:  # locked from here; refused if another run holds the dir or it is of another config
        if policy is not None:
            return _run_episodes(cfg, plan, store, policy, choices, on_start, tracking)
        try:
            policy = build_policy(cfg.policy, cfg.quantization)
        except Exception as e:  # noqa: BLE001 - any failure to build is a start failure, reported in one line
            log.debug("building the policy failed:\n%s", traceback.format_exc())
            raise ConfigError(f"could not build the policy ({target}): {type(e).__name__}: {_one_line(e)}") from None
        try:
            return _run_episodes(cfg, plan, store, policy, choices, on_start, tracking)
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
        output_dir: The run directory (default ``rollouts/evaluate/<time>``); re-using one resumes it
            when the config and the weights are the same: files the policy config names are digested;
            a policy object's weights are identified only by ``policy_version=`` (or a ``checkpoint``
            attribute), without which a used ``output_dir`` is refused.
        overrides: Hydra override strings, as on the command line (``"perturbation=action_noise"``).
        wandb_run: An existing W&B run (e.g. the training run) to log the results into, under
            ``eval/`` (not finished here); ``tracker=...`` in ``overrides`` logs to a run of its own.
        wandb_step: The step of ``wandb_run`` to log at (e.g. the training step); None = its next.
        **options: Config values by key; nested dicts for groups (``video={"enabled": False}``,
            ``max_steps=50``, ``num_envs=2``, ``shard="0/2"``, ``policy_version="step-5000"``).
            ``num_envs > 1`` from a script needs the call under ``if __name__ == "__main__":``.

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
                  choices: dict[str, str] | None, on_start: Callable[[], None] | None = None,
                  tracking: dict[str, Any] | None = None) -> dict[str, Any]:
    """The episode loop of :func:`run`, once the store is open and the policy built."""
    from tqdm import tqdm

    out = store.dir
    chunk = chunk_execution(cfg, policy)
    wait_ms = batch_wait_ms(cfg, policy)
    policy_info = asdict(policy.info())
    policy_name = (choices or {}).get("policy") or policy_info["name"]
    execution = check_execution(cfg)
    pending = [e for e in plan.episodes if not store.is_done(e.key)]
    num_envs = max(1, min(int(cfg.num_envs), len(pending)))
    try:  # one executor (and, when timed, one latency source and clock) per env slot; before anything is written
        actor = build_actor(cfg, policy, num_envs, chunk, policy_name)
    except ValueError as e:  # e.g. a latency profile without this policy's row
        raise ConfigError(_one_line(e)) from None
    meta = {
        "env": cfg.env.id, "suite": plan.suite, "policy": policy_name,
        "quantization": (cfg.quantization or {}).get("name", "none"),
        "perturbation": cfg.perturbation.name, "perturbation_strength": float(cfg.perturbation.strength),
        "seed": int(cfg.seed), "config_fingerprint": store.fingerprint, "policy_info": policy_info,
        "chunk": chunk, "scene": plan.scene, "num_envs": int(cfg.num_envs), "shard": plan.shard,
        "batch_wait_ms": wait_ms, "planned_episodes": len(plan.episodes),
        "execution": execution_meta(execution),
    }
    planned = {e.key for e in plan.episodes}
    outside = sum(r.key not in planned for r in store.records)
    if outside:
        meta["recorded_outside_plan"] = outside
        print(f"warning: {out} holds {outside} recorded episode(s) outside this run's plan (an earlier run of "
              "this config with more episodes_per_task or other tasks); the results count them too",
              file=sys.stderr)
    store.start(env=cfg.env.id, suite=plan.suite)
    if on_start is not None:
        on_start()
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    store.write_results(meta)  # from the start on, results.json always exists and is whole
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
            metrics=res.get("metrics") or {},
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

    wait_s = None if wait_ms is None else wait_ms / 1e3
    try:  # the one episode loop: N env workers, or (N = 1) one env in this process
        if num_envs > 1:
            pool = EnvPool(OmegaConf.to_container(cfg, resolve=True), policy.inputs, out, num_envs,
                           start_method=str(cfg.worker_start_method), timeout_s=cfg.worker_timeout_s,
                           egl_devices=list(cfg.worker_egl_devices) if cfg.worker_egl_devices else None,
                           batch_wait_s=wait_s)
        else:
            pool = EnvPool.in_process(EnvHost.from_config(cfg, policy.inputs, out), batch_wait_s=wait_s)
        with pool:
            pool.run(pending, actor, scene_seed, on_done=store_episode, trajectories=bool(cfg.trajectory.enabled))
    finally:
        bar.close()
    results = store.write_results(meta)
    track_run(cfg, out, results, store.records, fingerprint=store.fingerprint, **(tracking or {}))  # never raises
    return results


# ---------------------------------------------------------------------------- entry point
_REFUSED_JOBS: list[str] = []
"""Multirun jobs refused in this process (basic launcher): reported, then a non-zero exit at the end."""


def _save_hydra_files(cfg: DictConfig) -> None:
    """``.hydra/{config,hydra,overrides}.yaml``, as Hydra writes them, but only once the run is accepted."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.instance().cfg
    out = Path(hydra_cfg.hydra.runtime.output_dir) / ".hydra"
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(out / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
    atomic_write_text(out / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task))


def all_errored(results: dict[str, Any], run_dir: Path) -> str | None:
    """A one-line error when every episode of the results errored (the run measured nothing), else None."""
    from vla_gym.records import read_episodes

    overall = results.get("overall", {})
    n = int(overall.get("episodes", 0))
    if n == 0 or int(overall.get("errors", 0)) < n:
        return None
    first = next((r.error for r in read_episodes(run_dir / EPISODES_FILE) if r.error), "?")
    return f"all {n} episodes errored; nothing was measured. First error: {_one_line(RuntimeError(first))}"


def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    choices = dict(hc.runtime.choices)
    try:
        results = run(cfg, choices, on_start=lambda: _save_hydra_files(cfg))
    except (ConfigError, RunStoreError) as e:  # one clear line, no traceback, nothing written
        if hc.mode != RunMode.MULTIRUN:
            raise SystemExit(f"error: {_one_line(e)}") from None
        # a sweep goes on with its other jobs; the refused ones are listed and the sweep exits non-zero
        line = f"error: job {hc.job.num} ({','.join(hc.overrides.task)}): {_one_line(e)}"
        print(line, file=sys.stderr)
        if "BasicLauncher" not in str(hc.launcher.get("_target_", "")):
            raise ConfigError(line) from None  # another process: its launcher records the failure
        _REFUSED_JOBS.append(line)
        return
    print(f"\n{cfg.env.id} x {choices.get('policy')}  ->  {cfg.output_dir}")
    print(format_summary(results))
    failed = all_errored(results, Path(cfg.output_dir))
    if failed:
        if hc.mode != RunMode.MULTIRUN:
            raise SystemExit(f"error: {failed}")
        print(f"error: job {hc.job.num}: {failed}", file=sys.stderr)
        _REFUSED_JOBS.append(failed)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: validate overrides, then hand over to Hydra."""
    import hydra

    argv = sys.argv[1:] if argv is None else argv
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    check_overrides([a for a in argv if not a.startswith("-")])
    register_configs()
    sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="rollout", version_base="1.3")(_hydra_main)()
    if _REFUSED_JOBS:
        raise SystemExit(f"error: {len(_REFUSED_JOBS)} job(s) of the sweep were refused or measured nothing "
                         "(listed above); the others ran")


if __name__ == "__main__":
    main()
