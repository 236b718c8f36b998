"""Building what a run needs from its config: the policy, its chunk execution, and the envs.

The one place that turns config into objects, imported by the CLI (:mod:`vla_gym.rollout`), the
env worker processes (:mod:`vla_gym.parallel`), the policy server (:mod:`vla_gym.serve`) and
:func:`vla_gym.evaluate`; it imports none of them, so none of them imports another to build.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from vla_gym.envs.suite import EnvSuite
from vla_gym.policy import Policy

__all__ = ["batch_wait_ms", "build_actor", "build_policy", "chunk_execution", "make_env", "policy_class"]


def policy_class(target: str) -> type:
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
    cls = policy_class(target)
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


def make_env(cfg: DictConfig, task_index: int, policy: Any, record_video: bool, scene_seed: int = 0,
             suite: EnvSuite | None = None):
    """Build the env the policy needs: its cameras at its size, video view, perturbations.

    ``policy`` is the policy or just its :class:`~vla_gym.policy.PolicyInputs` (what an env
    worker process gets: the policy itself stays in the parent). How a task (and its scene
    stream) is selected is the env family's declaration (:mod:`vla_gym.envs.suite`), described
    here when ``suite`` is not given.
    """
    import gymnasium as gym
    from hydra.utils import instantiate

    from vla_gym.plan import env_suite

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
    suite = suite or env_suite(cfg)
    kwargs.update(suite.make_kwargs(task_index, str(cfg.scene.seeding), int(scene_seed)))
    if cfg.max_steps is not None:
        kwargs["max_episode_steps"] = int(cfg.max_steps)
    kwargs.update(OmegaConf.to_container(cfg.env.kwargs, resolve=True))
    kwargs.update(OmegaConf.to_container(cfg.perturbation.env_kwargs, resolve=True))
    env = gym.make(cfg.env.id, **kwargs)
    for wrapper_cfg in cfg.perturbation.wrappers:
        env = instantiate(wrapper_cfg, env=env)
    if getattr(getattr(env.unwrapped, "sim_env", None), "robots", None):
        from vla_gym.dynamics_probe import DynamicsProbe

        env = DynamicsProbe(env)  # true eef position and actuator forces for the metrics; reads only
    return env


def build_actor(cfg: DictConfig, policy: Policy, num_envs: int, chunk: dict[str, Any], policy_name: str | None = None):
    """The loop's actor: :class:`~vla_gym.chunking.ChunkedActor` for ``execution.timing=synchronous``
    (today's executors, bit for bit), else a :class:`~vla_gym.timing.TimedActor` with one executor and
    one latency source per env (each env its own clock)."""
    from vla_gym.chunking import ChunkedActor
    from vla_gym.execution import build_executor, build_latency_source, load_execution

    ex = load_execution(cfg.get("execution"))
    if ex.timing == "synchronous":
        return ChunkedActor(policy, num_envs=num_envs, **chunk)
    from vla_gym.timing import TimedActor

    executors = [build_executor(ex, **chunk) for _ in range(num_envs)]
    sources = [build_latency_source(ex, policy_name) for _ in range(num_envs)]
    rtc = {"schedule": ex.rtc.schedule.lower(), "max_guidance_weight": ex.rtc.max_guidance_weight,
           "guidance": ex.rtc.guidance, "execution_horizon": ex.rtc.execution_horizon}
    return TimedActor(policy, executors, sources, rtc=rtc)  # refuses handoff=rtc for a policy without it
