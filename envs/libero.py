"""LIBERO (and LIBERO-PRO) tasks as Gymnasium envs.

Episode protocol, as in the reference evals (OpenVLA, OpenVLA-OFT, openpi, LeRobot):
reset to one of the task's 50 fixed initial states, then ``num_settle_steps`` (10) no-op
steps with the gripper open while objects drop onto their supports -- those steps are not
counted, and only the last one is rendered (its observation is the policy's first). Episodes
end on success (``terminated``) or at the suite's step limit (``truncated``, applied by
Gymnasium's ``TimeLimit`` from the registered ``max_episode_steps``).

Scenes: the fixed initial state does not fix everything. LIBERO places fixtures (cabinets,
stoves, ...) from the global NumPy RNG on every reset, and ``set_init_state`` leaves them
where they landed. The reference evals call ``env.seed(S)`` (= ``np.random.seed(S)``) once per
task and then reset sequentially, so their episode e sits in the scene of the (e+1)-th reset
of that stream. ``scene_seeding="reference"`` (the default) reproduces exactly that scene for
any episode index, whatever ran before it in this process (see :class:`ReferenceSceneStream`).
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from vla_gym.envs.base import RobosuiteBackedEnv
from vla_gym.envs.render_context import kept_render_context
from vla_gym.envs.suite import DEFAULT_SCENE_SEED, SCENE_SEEDINGS, EnvSuite


def _ensure_libero_config() -> None:
    """Point LIBERO at a writable config dir unless the user chose one."""
    if "LIBERO_CONFIG_PATH" not in os.environ:
        path = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "vla_gym" / "libero"
        path.mkdir(parents=True, exist_ok=True)
        os.environ["LIBERO_CONFIG_PATH"] = str(path)


# Longest successful demo per suite plus margin, as used by the published evals.
SUITE_MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
BASE_SUITES = tuple(SUITE_MAX_STEPS)

# LIBERO-PRO perturbed suites that ship bddl files, init states and assets (NOTES.md).
PRO_SUFFIXES = ("lan", "object", "swap", "task", "with_mug", "with_yellow_book", "with_milk")
PRO_SUITES = tuple(
    f"{base}_{suffix}" for base in ("libero_spatial", "libero_object", "libero_goal", "libero_10")
    for suffix in PRO_SUFFIXES
)
SUPPORTED_SUITES = BASE_SUITES + PRO_SUITES
NUM_SETTLE_STEPS = 10
DEFAULT_TASKS = (0, 1)
"""``tasks: default`` of a LIBERO suite: its first two tasks."""


class ReferenceSceneStream:
    """The global-NumPy RNG state before each reset of the reference loop of one task.

    The reference loop is ``env.seed(S)`` once, then ``reset(); set_init_state(...)`` and the
    episode's steps, again and again. Nothing but ``reset`` draws from the global RNG (measured:
    ``set_init_state`` and ``step`` leave it untouched), so the state before reset e depends on
    S and e alone. States are kept per (task file, S) for the life of the process; a state
    not yet known is reached by replaying the missing resets, which costs about one second each
    (model rebuild without a render context), so an episode run out of order -- a resumed run,
    a shard, a worker -- still gets the reference's scene.
    """

    _streams: dict[tuple[str, int], dict[int, Any]] = {}

    def __init__(self, task_file: str, seed: int) -> None:
        self.seed = int(seed)
        fresh = np.random.RandomState(self.seed % 2**32).get_state()
        self._states = self._streams.setdefault((task_file, self.seed), {0: fresh})

    def state_before_reset(self, index: int, replay_reset) -> Any:
        """RNG state before the reference's reset number ``index`` (0-based).

        ``replay_reset()`` must perform one reset exactly as the reference does (it draws from
        the global RNG); it is called for each missing state, with the global RNG set for it.
        """
        if index < 0:
            raise ValueError(f"scene index must be >= 0, got {index}")
        if index not in self._states:
            start = max(k for k in self._states if k < index)
            np.random.set_state(self._states[start])
            for k in range(start, index):
                replay_reset()
                self._states[k + 1] = np.random.get_state()
        return self._states[index]

    def record_after_reset(self, index: int) -> None:
        """Remember the global RNG state right after reset ``index``: the state before ``index + 1``."""
        self._states.setdefault(index + 1, np.random.get_state())


def base_suite(suite: str) -> str:
    """The LIBERO suite a (possibly perturbed) suite derives from, for its step limit."""
    for base in sorted(BASE_SUITES, key=len, reverse=True):
        if suite == base or suite.startswith(base + "_"):
            return base
    raise ValueError(f"unknown LIBERO suite {suite!r}")


def max_episode_steps(suite: str) -> int:
    """The reference eval's step limit for ``suite`` (perturbed suites inherit their base's)."""
    return SUITE_MAX_STEPS[base_suite(suite)]


@lru_cache(maxsize=None)
def load_suite(suite: str):
    """Instantiate a LIBERO benchmark suite, with a clear error for unknown names."""
    _ensure_libero_config()
    if suite not in SUPPORTED_SUITES:
        hint = difflib.get_close_matches(suite, SUPPORTED_SUITES, n=3)
        raise ValueError(
            f"unknown or unsupported LIBERO suite {suite!r}"
            + (f"; did you mean {hint}?" if hint else "")
            + f" Supported: {list(SUPPORTED_SUITES)}"
        )
    from libero.libero import benchmark

    with contextlib.redirect_stdout(io.StringIO()):  # the benchmark prints task-order chatter
        return benchmark.get_benchmark_dict()[suite]()


def task_names(suite: str) -> list[str]:
    """Names of the tasks of ``suite`` in index order."""
    return list(load_suite(suite).get_task_names())


def num_init_states(suite: str, task_index: int) -> int:
    """Number of fixed initial states of one task of ``suite`` (read from its init-states file)."""
    try:
        return len(load_suite(suite).get_task_init_states(task_index))
    except (FileNotFoundError, OSError) as e:
        raise ValueError(f"suite {suite!r} task {task_index} has no init states file: {e}") from None


def resolve_task(suite: str, task: int | str) -> int:
    """Task index from an index or a task name; raises ``ValueError`` listing valid ones."""
    names = task_names(suite)
    if isinstance(task, (int, np.integer)) or (isinstance(task, str) and task.isdigit()):
        idx = int(task)
        if not 0 <= idx < len(names):
            raise ValueError(f"task index {idx} out of range for {suite} (0..{len(names) - 1})")
        return idx
    if task in names:
        return names.index(task)
    hint = difflib.get_close_matches(str(task), names, n=1)
    raise ValueError(
        f"unknown task {task!r} in {suite}" + (f"; did you mean {hint[0]!r}?" if hint else "")
        + f" Valid: indices 0..{len(names) - 1} or names {names}"
    )


class LiberoEnv(RobosuiteBackedEnv):
    """One LIBERO task as a Gymnasium env.

    Args:
        suite: A LIBERO suite (``libero_spatial``, ``libero_object``, ``libero_goal``,
            ``libero_10``, ``libero_90``) or a LIBERO-PRO one (``libero_spatial_lan``, ...).
        task: Task index or task name within the suite.
        scene_seeding: ``"reference"`` (default): episode e's fixtures are those of the reference
            evals' e-th episode, i.e. of the (e+1)-th reset after ``env.seed(scene_seed)``.
            ``"per_episode"``: the global RNG is seeded with the reset seed before each reset
            (independent scenes, not the published evals').
        scene_seed: S of the reference loop (OpenVLA/OFT 0, openpi 7).
        reuse_render_context: Keep the offscreen render context across resets when the rebuilt
            model's assets are unchanged (:mod:`vla_gym.envs.render_context`; same pixels, ~0.85 s
            less per reset on a CPU renderer). False rebuilds it every reset, as LIBERO does.
        **kwargs: Camera, size, render and privileged options of :class:`RobosuiteBackedEnv`.

    ``reset(options={"init_state_id": k, "scene_index": e})`` starts from the suite's k-th
    fixed initial state in the reference's e-th scene (``scene_index`` defaults to the init
    state id: the reference evals run init state e in episode e). Without ``init_state_id``
    the id is drawn from the reset seed, so the same seed gives the same initial state. The
    caller's global NumPy RNG is left as it was.
    """

    def __init__(self, suite: str = "libero_spatial", task: int | str = 0, *,
                 num_settle_steps: int = NUM_SETTLE_STEPS, scene_seeding: str = "reference",
                 scene_seed: int = DEFAULT_SCENE_SEED, reuse_render_context: bool = True,
                 **kwargs: Any) -> None:
        if scene_seeding not in SCENE_SEEDINGS:
            raise ValueError(f"scene_seeding must be one of {SCENE_SEEDINGS}, got {scene_seeding!r}")
        self.scene_seeding = scene_seeding
        self.scene_seed = int(scene_seed)
        self.reuse_render_context = bool(reuse_render_context)
        self.scene_index: int | None = None
        self.suite_name = suite
        self._suite = load_suite(suite)
        self.task_index = resolve_task(suite, task)
        self.task = self._suite.get_task(self.task_index)
        self.task_name = self.task.name
        try:
            self._init_states = np.asarray(self._suite.get_task_init_states(self.task_index))
        except (FileNotFoundError, OSError) as e:
            raise ValueError(f"suite {suite!r} task {self.task_index} has no init states file: {e}") from e
        super().__init__(num_settle_steps=num_settle_steps, **kwargs)
        # Which text is "the instruction" differs by suite, and it matters for fidelity:
        # - base suites: the published evals (OpenVLA, OpenVLA-OFT, openpi, LeRobot) prompt with
        #   task.language, parsed from the file name ("pick up the black bowl ..."), not the
        #   bddl's own sentence ("pick the akita black bowl ...");
        # - LIBERO-PRO suites: task.language is the *original* instruction even on _lan/_task,
        #   so only the bddl's parsed instruction is the real one.
        self.bddl_instruction = str(self._control_env.language_instruction)
        self.instruction = str(self.task.language) if suite in BASE_SUITES else self.bddl_instruction
        self.init_state_id: int | None = None

    @classmethod
    def describe(cls, suite: str = "libero_spatial", **_: Any) -> EnvSuite:
        """What the planner needs to know about ``suite`` (no env is built; see :mod:`vla_gym.envs.suite`)."""
        names = tuple(task_names(suite))
        lib = load_suite(suite)
        instructions = tuple(str(lib.get_task(i).language) for i in range(len(names))) if suite in BASE_SUITES else ()
        return EnvSuite(name=suite, tasks=names, default_tasks=tuple(i for i in DEFAULT_TASKS if i < len(names)),
                        max_episode_steps=max_episode_steps(suite), init_states=lambda t: num_init_states(suite, t),
                        scene_seeding=True, default_scene_seed=DEFAULT_SCENE_SEED, task_kwarg="task",
                        instructions=instructions)

    @property
    def num_init_states(self) -> int:
        """Number of fixed initial states of this task (50 for LIBERO)."""
        return len(self._init_states)

    def _build_sim(self) -> Any:
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        bddl = os.path.join(get_libero_path("bddl_files"), self.task.problem_folder, self.task.bddl_file)
        if not os.path.exists(bddl):
            raise ValueError(f"bddl file for {self.suite_name}/{self.task_name} not found at {bddl}")
        self._scene_stream = ReferenceSceneStream(bddl, self.scene_seed)
        self._control_env = OffScreenRenderEnv(
            bddl_file_name=bddl,
            ignore_done=True,  # episode ends are decided here, not by robosuite's horizon
            **self._camera_obs_kwargs(),  # exactly the requested cameras, at their size (base.py)
        )
        return self._control_env.env

    def _reset_sim(self, seed: int | None, options: dict[str, Any]) -> dict[str, np.ndarray]:
        init_id = options.get("init_state_id")
        if init_id is None:
            init_id = int(self.np_random.integers(self.num_init_states))
        init_id = int(init_id)
        if not 0 <= init_id < self.num_init_states:
            raise ValueError(
                f"init_state_id {init_id} out of range: {self.suite_name} task {self.task_index} "
                f"has {self.num_init_states} initial states (0..{self.num_init_states - 1})"
            )
        scene = int(options.get("scene_index", init_id))
        self.init_state_id = init_id
        self.scene_index = scene if self.scene_seeding == "reference" else None
        caller_state = np.random.get_state()
        try:
            with kept_render_context(self._sim_env, enabled=self.reuse_render_context):
                return self._reset_scene(scene, seed, init_id)
        finally:
            np.random.set_state(caller_state)

    def _reset_scene(self, scene: int, seed: int | None, init_id: int) -> dict[str, np.ndarray]:
        """LIBERO's reset in the episode's scene (the global RNG set as the reference has it), then its init state."""
        if self.scene_seeding == "reference":
            np.random.set_state(self._scene_stream.state_before_reset(scene, self._replay_reset))
            self._control_env.reset()
            self._scene_stream.record_after_reset(scene)
        else:
            np.random.seed(int(seed) % 2**32)
            self._control_env.reset()
        return self._control_env.set_init_state(self._init_states[init_id])

    def _replay_reset(self) -> None:
        """One reset as the reference does it, for its RNG draws only: no render context is built."""
        sim_env = self._sim_env
        renders, sim_env.has_offscreen_renderer = sim_env.has_offscreen_renderer, False
        try:
            self._control_env.reset()
        finally:
            sim_env.has_offscreen_renderer = renders

    def _is_success(self) -> bool:
        return bool(self._control_env.check_success())

    def _info(self, success: bool) -> dict[str, Any]:
        return {**super()._info(success), "init_state_id": self.init_state_id,
                "scene_seeding": self.scene_seeding, "scene_seed": self.scene_seed, "scene_index": self.scene_index,
                "bddl_instruction": self.bddl_instruction,
                "suite": self.suite_name, "task": self.task_name, "task_index": self.task_index}

    def _per_object(self, of_body: Any, of_site: Any) -> dict[str, np.ndarray]:
        """``of_body`` of every object body, then ``of_site`` of every object site that has one."""
        env = self._sim_env
        out = {name: of_body(env.sim.model.body_id2name(bid)) for name, bid in env.obj_body_id.items()}
        for name in env.object_sites_dict:
            with contextlib.suppress(Exception):
                out[name] = of_site(name)
        return out

    def _privileged_poses(self) -> dict[str, np.ndarray]:
        return self._per_object(self.body_pose, self.site_pose)

    def _privileged_boxes(self) -> dict[str, np.ndarray]:
        return self._per_object(self.body_aabb, self.site_aabb)

    def _goal_description(self) -> str:
        goal = self._sim_env.parsed_problem["goal_state"]
        return "; ".join(" ".join(str(x) for x in pred) for pred in goal)
