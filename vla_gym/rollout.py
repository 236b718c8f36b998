"""``python -m vla_gym.rollout``: evaluate a policy on env tasks, with videos and results.

Composed by Hydra from ``conf/`` (env x policy x quantization x perturbation). For every
task and episode: reset the env and the policy together, execute action chunks through
:mod:`vla_gym.chunking` until success or the step limit, then append the episode to
``episodes.jsonl``, rewrite ``results.json`` atomically and write the episode's video.

Re-running into the same output directory resumes: finished episodes are skipped. A crash
inside one episode (e.g. MuJoCo instability) is recorded as that episode's ``error`` and the
run goes on with a fresh env.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vla_gym.chunking import ChunkedActor
from vla_gym.config import CONFIG_MODULE, check_overrides, register_configs
from vla_gym.policy import Policy
from vla_gym.results import (
    EpisodeRecord,
    aggregate,
    append_record,
    atomic_write_json,
    atomic_write_text,
    load_records,
)

log = logging.getLogger("vla_gym.rollout")

EPISODES_FILE = "episodes.jsonl"
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"
RUNNER_KEYS: tuple[str, ...] = ()
"""Policy-YAML keys the runner reads instead of the policy (none since Policy API v2: chunk
execution and the reference scene seed are declared on the policy class)."""
DEFAULT_SCENE_SEED = 0
"""Scene seed S when neither ``scene.seed`` nor the policy declares one: OpenVLA/OFT's ``env.seed(0)``."""


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


def resolve_tasks(cfg: DictConfig) -> list[int]:
    """Task indices to run, from ``tasks`` (null, index, name, list or "all")."""
    if cfg.env.kind == "robosuite":  # one task per env id: `tasks` selects within LIBERO suites only
        return [0]
    from vla_gym.envs.libero import resolve_task, task_names

    suite = cfg.env.id.split("/", 1)[1]
    spec = cfg.tasks
    if spec is None or spec == "all":
        return list(range(len(task_names(suite))))
    items = list(spec) if isinstance(spec, (list, tuple)) or OmegaConf.is_list(spec) else [spec]
    return [resolve_task(suite, t) for t in items]


def suite_name(cfg: DictConfig) -> str:
    """The suite recorded with each episode: the LIBERO suite, or ``robosuite``."""
    return cfg.env.id.split("/", 1)[1] if cfg.env.kind == "libero" else "robosuite"


def task_label(cfg: DictConfig, task_index: int) -> str:
    """A task's name, known without building its env (so crashed episodes are named too)."""
    if cfg.env.kind == "libero":
        from vla_gym.envs.libero import task_names

        return task_names(suite_name(cfg))[task_index]
    return cfg.env.id.split("/", 1)[1]


def resolve_scene_seed(cfg: DictConfig, policy: Policy) -> int:
    """S of the reference scene stream: ``scene.seed``, else the policy's reference eval's, else 0."""
    if cfg.scene.seed is not None:
        return int(cfg.scene.seed)
    declared = policy.reference_scene_seed
    return int(DEFAULT_SCENE_SEED if declared is None else declared)


def make_env(cfg: DictConfig, task_index: int, policy: Policy, record_video: bool, scene_seed: int = 0):
    """Build the env the policy needs: its cameras at its size, video view, perturbations."""
    import gymnasium as gym
    from hydra.utils import instantiate

    inputs = policy.inputs
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
                video_size: int, cameras: tuple[str, ...]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Run one episode of env 0 of ``actor``; return its measurements and (if recording) the video frames."""
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
        snapshot(f"t={steps}" + (" SUCCESS" if success else ""))
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    result = dict(
        instruction=instruction, success=success, steps=steps, sum_reward=total_reward,
        latency_ms_mean=float(lat.mean()), latency_ms_p95=float(np.percentile(lat, 95)),
        policy_queries=len(latencies), init_state_id=info.get("init_state_id", init_state_id),
        policy_timing_ms={stage: float(np.mean(v)) for stage, v in stage_ms.items()},
    )
    return result, frames


def _config_fingerprint(cfg: DictConfig) -> str:
    """Hash of everything that changes episode outcomes (not output paths or video options)."""
    keys = ("env", "policy", "quantization", "perturbation", "seed", "max_steps", "image_size", "render_quality",
            "chunk", "scene")
    blob = json.dumps({k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                       for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_resume(out: Path, fingerprint: str) -> None:
    run_file = out / RUN_FILE
    if run_file.exists():
        previous = json.loads(run_file.read_text()).get("config_fingerprint")
        if previous != fingerprint:
            raise SystemExit(
                f"error: {out} already holds a run with a different config (fingerprint {previous} != "
                f"{fingerprint}); resuming would mix results. Choose another output dir "
                "(hydra.run.dir=...) or delete that one."
            )


def format_summary(results: dict[str, Any]) -> str:
    """A plain-text table of per-task and overall success rates."""
    rows = [("task", "success", "rate", "95% CI", "mean steps")]
    for s in results["per_task"].values():
        name = s["task"] if len(s["task"]) <= 70 else s["task"][:69] + "…"
        rows.append((name, f"{s['successes']}/{s['episodes']}", f"{s['pc_success']:.1f}%",
                     f"[{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]", f"{s['mean_steps']:.0f}"))
    o = results["overall"]
    rows.append(("overall", f"{o['successes']}/{o['episodes']}", f"{o['pc_success']:.1f}%",
                 f"[{100 * o['ci95'][0]:.1f}, {100 * o['ci95'][1]:.1f}]", f"{o['mean_steps']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(cfg: DictConfig, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.policy`` on ``cfg.env``; return the aggregated results.

    ``choices`` are Hydra's config-group choices (``policy: openvla``), used to name things.
    """
    from tqdm import tqdm

    from vla_gym.envs.libero import SCENE_SEEDINGS
    from vla_gym.video import write_video

    if cfg.scene.seeding not in SCENE_SEEDINGS:
        raise SystemExit(f"error: scene.seeding must be one of {list(SCENE_SEEDINGS)}, got {cfg.scene.seeding!r}")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = _config_fingerprint(cfg)
    _check_resume(out, fingerprint)
    atomic_write_json(out / RUN_FILE, {"config_fingerprint": fingerprint})
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    policy = build_policy(cfg.policy, cfg.quantization)
    chunk = chunk_execution(cfg, policy)
    actor = ChunkedActor(policy, num_envs=1, **chunk)
    scene = {"seeding": str(cfg.scene.seeding), "seed": resolve_scene_seed(cfg, policy)} \
        if cfg.env.kind == "libero" else None
    policy_info = asdict(policy.info())
    policy_name = (choices or {}).get("policy") or policy_info["name"]
    tasks = resolve_tasks(cfg)
    n_eps = int(cfg.episodes_per_task)
    if n_eps < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {n_eps}")
    init_ids = list(cfg.init_state_ids) if cfg.init_state_ids is not None else None
    if init_ids is not None and len(init_ids) < n_eps:
        raise ValueError(f"init_state_ids has {len(init_ids)} ids for {n_eps} episodes per task")

    meta = {
        "env": cfg.env.id, "policy": policy_name, "quantization": (cfg.quantization or {}).get("name", "none"),
        "perturbation": cfg.perturbation.name, "perturbation_strength": float(cfg.perturbation.strength),
        "seed": int(cfg.seed), "config_fingerprint": fingerprint, "policy_info": policy_info,
        "chunk": chunk, "scene": scene,
    }
    records = load_records(out / EPISODES_FILE)
    done = {r.key for r in records}
    total = len(tasks) * n_eps
    bar = tqdm(total=total, initial=sum(1 for r in records), desc="episodes", unit="ep", dynamic_ncols=True)
    try:
        suite = suite_name(cfg)
        for task_index in tasks:
            env = None
            task_name, instruction = task_label(cfg, task_index), ""
            for ep in range(n_eps):
                if (suite, task_index, ep) in done:
                    continue
                record_video = bool(cfg.video.enabled) and ep < int(cfg.video.max_per_task)
                seed = int(cfg.seed) + ep
                init_id = (init_ids[ep] if init_ids else ep) if cfg.env.kind == "libero" else None
                t0 = time.perf_counter()
                error, frames, res = None, [], {}
                try:
                    if env is None:
                        env = make_env(cfg, task_index, policy, record_video=bool(cfg.video.enabled),
                                       scene_seed=(scene or {}).get("seed", 0))
                        instruction = env.unwrapped.instruction
                    res, frames = run_episode(env, actor, seed=seed, init_state_id=init_id,
                                              record_video=record_video, video_size=int(cfg.video.size),
                                              cameras=tuple(policy.inputs.cameras))
                except Exception as e:  # noqa: BLE001 - one broken episode must not end the run
                    error = f"{type(e).__name__}: {e}"
                    log.error("episode %d of task %d failed:\n%s", ep, task_index, traceback.format_exc())
                    if env is not None:
                        env.close()
                    env = None  # a crashed simulator is rebuilt for the next episode
                video_rel = None
                if frames:
                    outcome = "success" if res.get("success") else "failure"
                    video_rel = f"videos/{task_name}/ep{ep:03d}_{outcome}.mp4"
                    write_video(out / video_rel, frames, fps=int(cfg.video.fps))
                record = EpisodeRecord(
                    suite=suite, task=task_name, task_index=task_index,
                    init_state_id=res.get("init_state_id", init_id), episode_index=ep, seed=seed,
                    instruction=res.get("instruction", instruction),
                    success=bool(res.get("success", False)), steps=int(res.get("steps", 0)),
                    sum_reward=float(res.get("sum_reward", 0.0)), wall_s=time.perf_counter() - t0,
                    latency_ms_mean=res.get("latency_ms_mean", 0.0), latency_ms_p95=res.get("latency_ms_p95", 0.0),
                    policy_queries=res.get("policy_queries", 0), video=video_rel, error=error,
                    extra={"policy_timing_ms": res["policy_timing_ms"]} if res.get("policy_timing_ms") else {},
                    policy=policy_name, perturbation=cfg.perturbation.name,
                    perturbation_strength=float(cfg.perturbation.strength),
                )
                append_record(out / EPISODES_FILE, record)
                records.append(record)
                atomic_write_json(out / RESULTS_FILE, aggregate(records, meta))
                bar.update(1)
                bar.set_postfix(success=f"{sum(r.success for r in records)}/{len(records)}")
            if env is not None:
                env.close()
    finally:
        bar.close()
        policy.close()
    results = aggregate(records, meta)
    atomic_write_json(out / RESULTS_FILE, results)
    return results


# ---------------------------------------------------------------------------- entry point
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    choices = dict(HydraConfig.get().runtime.choices)
    results = run(cfg, choices)
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
