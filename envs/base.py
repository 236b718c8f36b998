"""Shared Gymnasium env over a robosuite-based simulation (robosuite tasks and LIBERO).

The wrapped simulator is built with robosuite's own camera observables for exactly the
cameras the policy asked for, at their final size: frames then come from the physics instant
robosuite samples its observations at, the same instant as the state and as the raw env's
``agentview_image`` the reference evals read (see :mod:`vla_gym.envs.camera_gate`). A gate
keeps those observables from rendering during reset and all settle steps but the last, so
frames no one sees cost nothing, and a policy that reads one 224x224 camera never pays for a
second one.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import weakref
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vla_gym.envs import contract
from vla_gym.envs.camera_gate import CameraSensorGate, frames_are_bottom_up, image_key

JOINT_LIMIT_MARGIN = 0.1
"""rad (m for fingers) added to joint limits in the observation space: MuJoCo limits are soft."""
EEF_REACH_BOUND_M = 1.5
"""Half-width of the box around the robot base that bounds ``state[:3]`` (Panda reach 0.855 m + hand)."""
RENDER_QUALITIES = ("reference", "fast")
_LIVE_ENVS: "weakref.WeakSet[RobosuiteBackedEnv]" = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_live_envs() -> None:
    """Close envs the user forgot to close, before robosuite's EGL display goes away."""
    for env in list(_LIVE_ENVS):
        env.close()


def _register_atexit_once() -> None:
    # Registered after robosuite's own EGL atexit handler (robosuite is imported while the
    # first sim is built), so it runs *before* it: atexit is last-in, first-out.
    global _ATEXIT_REGISTERED
    if not _ATEXIT_REGISTERED:
        atexit.register(_close_live_envs)
        _ATEXIT_REGISTERED = True


WORLD_BOUND_M = 10.0
"""Bound of privileged object positions: no physical limit exists (an object can fall off the
table), so a box far beyond any LIBERO/robosuite scene (a few metres) keeps the space finite."""


def _pose_space() -> spaces.Box:
    high = np.array([WORLD_BOUND_M] * 3 + [1.0] * 4, dtype=np.float32)  # position, unit quaternion
    return spaces.Box(-high, high, dtype=np.float32)


def body_subtree(model: Any, root: int) -> set[int]:
    """``root`` and all its descendant bodies in a ``mujoco.MjModel`` (bodies are ordered parents-first)."""
    bodies = {root}
    for b in range(root + 1, model.nbody):
        if model.body_parentid[b] in bodies:
            bodies.add(b)
    return bodies


@contextlib.contextmanager
def seeded_global_numpy(seed: int | None):
    """Seed NumPy's global RNG for the duration of the block, then restore it.

    robosuite 1.4 draws object placements and robot init noise from ``np.random``; seeding
    it only around the simulator's reset keeps episodes reproducible without changing the
    caller's global random state.
    """
    if seed is None:
        yield
        return
    saved = np.random.get_state()
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        np.random.set_state(saved)


class RobosuiteBackedEnv(gym.Env[dict, np.ndarray]):
    """Base class: cameras, state, action checks, settle steps, success and cleanup.

    Subclasses implement :meth:`_build_sim`, :meth:`_reset_sim`, :meth:`_is_success`,
    :meth:`_privileged_poses` and set ``self.instruction``.

    Args:
        cameras: Cameras rendered into ``obs["images"]`` (policy names or MuJoCo names).
        image_size: Side of the square observation images, rendered at this size directly.
        render_mode: ``"rgb_array"`` to enable :meth:`render`, else ``None``.
        render_camera: Camera that :meth:`render` shows (a third-person view for videos).
        render_size: Side of the frames :meth:`render` returns.
        privileged: Add ``obs["privileged"]`` for scripted experts: ``poses`` (name -> pos +
            quat xyzw), ``boxes`` (name -> world AABB of its collision geoms) and ``goal``.
        num_settle_steps: No-op steps (gripper open) run inside ``reset`` and not counted.
        render_quality: ``"reference"`` (default): MuJoCo's rendering exactly as LIBERO and
            robosuite configure it, the pixels published policies were evaluated on.
            ``"fast"``: no MSAA and no reflections, about 2x cheaper per camera on a CPU
            renderer but different pixels (measured in docs/benchmarks.md); an explicit opt-in.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": contract.CONTROL_FREQ_HZ}

    def __init__(
        self,
        *,
        cameras: tuple[str, ...] | list[str] = ("agentview",),
        image_size: int = 224,
        render_mode: str | None = None,
        render_camera: str = "agentview",
        render_size: int = 256,
        privileged: bool = False,
        num_settle_steps: int = 0,
        render_quality: str = "reference",
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if int(image_size) <= 0 or int(render_size) <= 0:
            raise ValueError(f"image sizes must be positive, got image_size={image_size}, render_size={render_size}")
        if num_settle_steps < 0:
            raise ValueError(f"num_settle_steps must be >= 0, got {num_settle_steps}")
        self.cameras = tuple(cameras)
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"duplicate camera names in {self.cameras}")
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self.render_camera = render_camera
        self.render_size = int(render_size)
        self.privileged = privileged
        self.num_settle_steps = int(num_settle_steps)
        if render_quality not in RENDER_QUALITIES:
            raise ValueError(f"render_quality must be one of {RENDER_QUALITIES}, got {render_quality!r}")
        self.render_quality = render_quality
        self.instruction: str = ""
        self._sim_env: Any = None  # the robosuite MujocoEnv
        self._raw_obs: dict[str, np.ndarray] = {}
        self._frames: dict[tuple[str, int], np.ndarray] = {}
        self._closed = False
        self._reset_hooks: list[Callable[[RobosuiteBackedEnv, int], None]] = []
        self.episode_seed: int | None = None
        """Simulator seed of the current episode (derived from ``np_random`` on unseeded resets)."""

        caller_rng = np.random.get_state()  # building a robosuite env resets it, drawing from np.random
        try:
            self._sim_env = self._build_sim_checking_cameras()
        finally:
            np.random.set_state(caller_rng)
        self._camera_gate = CameraSensorGate(self._sim_env)
        _LIVE_ENVS.add(self)
        _register_atexit_once()
        self._check_cameras([*self.cameras, *([render_camera] if render_mode else [])])
        self.action_space = spaces.Box(-1.0, 1.0, shape=(contract.ACTION_DIM,), dtype=np.float32)
        self.observation_space = self._make_observation_space()

    # ----------------------------------------------------------------- subclass hooks
    def _build_sim(self) -> Any:
        """Create the robosuite env with :meth:`_camera_obs_kwargs` and the offscreen renderer on."""
        raise NotImplementedError

    def _build_sim_checking_cameras(self) -> Any:
        """:meth:`_build_sim`, with an unknown camera named clearly instead of robosuite's error.

        robosuite only says "sensor ... is invalid" for a camera the scene lacks, and the valid
        names are known only from a built scene, so a camera-less one is built to list them:
        first, for names outside :data:`contract.SCENE_CAMERAS` (no half-built sim is left behind),
        or after a failed build with standard names (a scene that lacks one of them).
        """
        if any(contract.mujoco_camera_name(c) not in contract.SCENE_CAMERAS for c in self.cameras):
            self._probe_cameras()
        try:
            return self._build_sim()
        except Exception as exc:
            if not self.cameras:
                raise
            failure = exc.with_traceback(None)  # drop the frames that hold the half-built sim ...
        gc.collect()  # ... so its GL context is freed now, while EGL is still up
        self._probe_cameras()
        raise failure

    def _probe_cameras(self) -> None:
        """Build the scene without cameras and raise ``ValueError`` for a requested camera it lacks."""
        requested, self.cameras = self.cameras, ()
        probe = self._build_sim()
        try:
            self._sim_env = probe
            self._check_cameras(list(requested))
        finally:
            self._sim_env = None
            self.cameras = requested
            with contextlib.suppress(Exception):
                probe.close()
            gc.collect()

    def _camera_obs_kwargs(self) -> dict[str, Any]:
        """robosuite constructor arguments that observe exactly ``self.cameras`` at ``image_size``."""
        if not self.cameras:
            return {"use_camera_obs": False}
        return {
            "use_camera_obs": True,
            "camera_names": [contract.mujoco_camera_name(c) for c in self.cameras],
            "camera_heights": self.image_size,
            "camera_widths": self.image_size,
            "camera_depths": False,
        }

    def _reset_sim(self, seed: int | None, options: dict[str, Any]) -> dict[str, np.ndarray]:
        """Put the simulation in the episode's initial state; return robosuite's obs dict."""
        raise NotImplementedError

    def _is_success(self) -> bool:
        raise NotImplementedError

    def _privileged_poses(self) -> dict[str, np.ndarray]:
        """Name -> 7-D pose (pos, quat xyzw) of every object a scripted expert may need."""
        raise NotImplementedError

    def _privileged_boxes(self) -> dict[str, np.ndarray]:
        """Name -> world AABB (6,) for the same names as :meth:`_privileged_poses`."""
        raise NotImplementedError

    def _goal_description(self) -> str:
        """Machine-readable goal for scripted experts (e.g. ``"on bowl_1 plate_1"``)."""
        return ""

    # ----------------------------------------------------------------- spaces
    def _make_observation_space(self) -> spaces.Dict:
        size = self.image_size
        obs_spaces: dict[str, spaces.Space] = {
            "images": spaces.Dict(
                {cam: spaces.Box(0, 255, shape=(size, size, 3), dtype=np.uint8) for cam in self.cameras}
            ),
            "instruction": spaces.Text(
                max_length=contract.INSTRUCTION_MAX_LENGTH, charset=contract.INSTRUCTION_CHARSET
            ),
            "state": spaces.Box(*(b.astype(np.float32) for b in self._state_bounds()), dtype=np.float32),
            "joint_pos": spaces.Box(*(b.astype(np.float32) for b in self._joint_bounds()), dtype=np.float32),
        }
        if self.privileged:
            names = sorted(self._privileged_poses())
            obs_spaces["privileged"] = spaces.Dict(
                {
                    "poses": spaces.Dict({n: _pose_space() for n in names}),
                    "boxes": spaces.Dict(
                        {n: spaces.Box(-WORLD_BOUND_M, WORLD_BOUND_M, shape=(6,), dtype=np.float32) for n in names}
                    ),
                    "goal": spaces.Text(
                        max_length=contract.INSTRUCTION_MAX_LENGTH, charset=contract.INSTRUCTION_CHARSET
                    ),
                }
            )
        return spaces.Dict(obs_spaces)

    def _joint_range(self, joint_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        model = self._sim_env.sim.model
        ranges = np.array([model.jnt_range[model.joint_name2id(j)] for j in joint_names], dtype=np.float64)
        return ranges[:, 0] - JOINT_LIMIT_MARGIN, ranges[:, 1] + JOINT_LIMIT_MARGIN

    def _joint_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The arm's joint limits, widened by :data:`JOINT_LIMIT_MARGIN` (soft limits overshoot)."""
        return self._joint_range(list(self._sim_env.robots[0].robot_joints))

    def _state_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the 8-D state: a reach box around the robot base, |axis-angle| <= 2 pi, finger limits.

        robosuite's ``quat2axisangle`` returns angles in [0, 2 pi] (it does not canonicalise the
        quaternion's sign), hence 2 pi rather than pi.
        """
        robot = self._sim_env.robots[0]
        base = np.asarray(self._sim_env.sim.data.get_body_xpos(robot.robot_model.root_body), dtype=np.float64)
        finger_low, finger_high = self._joint_range(list(robot.gripper.joints))
        low = np.concatenate([base - EEF_REACH_BOUND_M, np.full(3, -2 * np.pi), finger_low])
        high = np.concatenate([base + EEF_REACH_BOUND_M, np.full(3, 2 * np.pi), finger_high])
        return low, high

    def _check_cameras(self, cameras: list[str]) -> None:
        available = set(self._sim_env.sim.model.camera_names)
        aliases = set(contract.CAMERA_ALIASES)
        for cam in cameras:
            if contract.mujoco_camera_name(cam) not in available:
                valid = sorted(aliases | available)
                raise ValueError(f"unknown camera {cam!r}; valid cameras for this scene: {valid}")

    # ----------------------------------------------------------------- gym API
    def add_reset_hook(self, hook: Callable[[RobosuiteBackedEnv, int], None]) -> None:
        """Call ``hook(env, seed)`` on every reset, after the sim reset and before the settle steps.

        For perturbations that edit the MuJoCo model or the initial state: LIBERO rebuilds its
        model on each reset, so such edits must be re-applied every episode, and edits to the
        initial state must land before objects settle. Hooks run in the order they were added.
        """
        self._reset_hooks.append(hook)

    def _resample_observations(self) -> None:
        """Re-read every observable from the current ``sim.data`` (after hooks, or at a reset with no settle steps).

        robosuite's observables advance their sampling clock on every forced update; the clocks
        are put back so the episode samples observations at the same physics sub-steps as the
        raw env does (otherwise a no-op hook would shift the reported state slightly).
        """
        sim_env = self._sim_env
        sim_env.sim.forward()
        clocks = {name: (obs._time_since_last_sample, obs._sampled) for name, obs in sim_env._observables.items()}
        self._raw_obs = sim_env._get_observations(force_update=True)
        for name, obs in sim_env._observables.items():
            obs._time_since_last_sample, obs._sampled = clocks[name]

    @property
    def sim_env(self) -> Any:
        """The underlying robosuite environment (for perturbations and experts)."""
        return self._sim_env

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("env is closed; create a new one")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset to the episode's initial state, run the settle steps; render only the last one.

        The first observation is the raw env's observation after the last settle step (or,
        without settle steps, after the reset), cameras included, from the same instant.
        """
        super().reset(seed=seed)
        self._check_open()
        options = dict(options or {})
        if seed is None:
            # derive the simulator's seed from our RNG so unseeded resets still differ
            seed = int(self.np_random.integers(2**31))
        self.episode_seed = seed
        gate = self._camera_gate
        with gate.closed():
            self._raw_obs = self._reset_sim(seed, options)
            self._configure_renderer()  # LIBERO rebuilds its sim (and GL context) on every reset
            if self._reset_hooks:
                for hook in self._reset_hooks:
                    hook(self, seed)
                self._resample_observations()
            for _ in range(self.num_settle_steps - 1):
                self._settle_step()
        if self.num_settle_steps > 0:
            self._settle_step()  # gate open: its observation is the policy's first
        elif self.cameras:
            self._resample_observations()  # render the reset instant, after hooks and render settings
        self._frames.clear()
        return self._observation(), self._info(success=self._is_success())

    def _settle_step(self) -> None:
        self._raw_obs, _, _, _ = self._sim_env.step(contract.SETTLE_ACTION.astype(np.float64))

    def step(self, action: np.ndarray):
        """Apply one 7-D action; ``terminated`` is success, ``truncated`` comes from TimeLimit."""
        self._check_open()
        a = contract.check_action(action)
        self._raw_obs, _, _, _ = self._sim_env.step(a)
        self._frames.clear()
        success = self._is_success()
        return self._observation(), float(success), success, False, self._info(success=success)

    def render(self) -> np.ndarray | None:
        """Upright RGB frame of ``render_camera`` at ``render_size`` (for videos).

        When that camera is also observed at that size this is the observation's own frame (same
        instant, no second render); otherwise it is rendered from the state at the end of the step.
        """
        if self.render_mode != "rgb_array":
            return None
        return self.render_camera_image(self.render_camera, self.render_size)

    def close(self) -> None:
        """Free the simulator and its EGL context now, not at interpreter exit.

        robosuite frees the GL context in ``__del__``; left to interpreter shutdown that runs
        after EGL is torn down and prints ``EGLError`` tracebacks. Freeing here is idempotent.
        """
        if self._closed:
            return
        self._closed = True
        if self._sim_env is not None:
            with contextlib.suppress(Exception):
                self._sim_env.close()
            self._sim_env = None
        self._frames.clear()
        self._raw_obs = {}
        gc.collect()

    # ----------------------------------------------------------------- observation
    def _configure_renderer(self) -> None:
        """Apply ``render_quality="fast"`` to the offscreen context (once per GL context).

        MSAA (4 samples) and planar reflections are most of a LIBERO frame's cost on a CPU
        renderer; both are scene-wide MuJoCo settings, so the model's sample count is lowered
        and the context's buffers re-created, and reflections are turned off in its scene.
        """
        if self.render_quality == "reference":
            return
        import mujoco

        sim = self._sim_env.sim
        ctx = sim._render_context_offscreen
        if ctx is None or getattr(ctx, "vla_gym_fast", False):
            return
        sim.model.vis.quality.offsamples = 0
        ctx.gl_ctx.make_current()
        ctx.con.free()
        ctx._set_mujoco_context_and_buffers()
        ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        ctx.vla_gym_fast = True

    def render_camera_image(self, camera: str, size: int) -> np.ndarray:
        """One camera at ``size`` x ``size``, upright; cached until the next step.

        An observed camera at the observed size is robosuite's observation frame (sampled inside
        the step, as the reference env's); any other camera or size is rendered now.
        """
        key = (camera, size)
        if key not in self._frames:
            self._check_open()
            if camera in self.cameras and size == self.image_size:
                raw = self._raw_obs[image_key(contract.mujoco_camera_name(camera))]
                frame = contract.upright(raw) if frames_are_bottom_up() else np.ascontiguousarray(raw)
            else:
                frame = contract.upright(self._sim_env.sim.render(
                    camera_name=contract.mujoco_camera_name(camera), width=size, height=size, depth=False))
            self._frames[key] = frame
        return self._frames[key]

    def proprio_state(self) -> np.ndarray:
        """The 8-D state: eef position, eef axis-angle, gripper finger positions."""
        o = self._raw_obs
        return np.concatenate(
            [o["robot0_eef_pos"], contract.quat_to_axis_angle(o["robot0_eef_quat"]), o["robot0_gripper_qpos"]]
        ).astype(np.float32)

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "images": {cam: self.render_camera_image(cam, self.image_size) for cam in self.cameras},
            "instruction": self.instruction,
            "state": self.proprio_state(),
            "joint_pos": self.joint_positions(),
        }
        if self.privileged:
            obs["privileged"] = {
                "poses": {k: v.astype(np.float32) for k, v in sorted(self._privileged_poses().items())},
                "boxes": {k: v.astype(np.float32) for k, v in sorted(self._privileged_boxes().items())},
                "goal": self._goal_description(),
            }
        return obs

    def joint_positions(self) -> np.ndarray:
        """The arm's 7 joint angles, read from the simulator (robosuite tasks omit the obs key)."""
        robot = self._sim_env.robots[0]
        return np.asarray(self._sim_env.sim.data.qpos[robot._ref_joint_pos_indexes], dtype=np.float32)

    def _info(self, success: bool) -> dict[str, Any]:
        return {"is_success": bool(success), "instruction": self.instruction}

    # ----------------------------------------------------------------- helpers
    def body_pose(self, body_name: str) -> np.ndarray:
        """World pose (pos, quat xyzw) of a MuJoCo body."""
        sim = self._sim_env.sim
        bid = sim.model.body_name2id(body_name)
        wxyz = sim.data.body_xquat[bid]
        return np.concatenate([sim.data.body_xpos[bid], wxyz[[1, 2, 3, 0]]]).astype(np.float64)

    def body_aabb(self, body_name: str) -> np.ndarray:
        """World axis-aligned box ``[xmin, ymin, zmin, xmax, ymax, zmax]`` of a body's collision geoms.

        Covers the body and its descendants; scripted experts use it for grasp heights and
        rims instead of per-object constants.
        """
        model = self._sim_env.sim.model._model
        data = self._sim_env.sim.data._data
        root = model.body(body_name).id
        bodies = body_subtree(model, root)
        corners = []
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        for g in range(model.ngeom):
            if model.geom_bodyid[g] not in bodies or (model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0):
                continue
            center, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
            local = center + signs * half
            corners.append(local @ data.geom_xmat[g].reshape(3, 3).T + data.geom_xpos[g])
        if not corners:
            p = data.xpos[root]
            return np.concatenate([p, p])
        pts = np.concatenate(corners)
        return np.concatenate([pts.min(axis=0), pts.max(axis=0)])

    def site_aabb(self, site_name: str) -> np.ndarray:
        """World box of a (box-shaped) region site, from its size; orientation ignored."""
        model = self._sim_env.sim.model._model
        sid = model.site(site_name).id
        pos = self._sim_env.sim.data.get_site_xpos(site_name)
        half = model.site_size[sid]
        return np.concatenate([pos - half, pos + half])

    def site_pose(self, site_name: str) -> np.ndarray:
        """World pose (pos, quat xyzw) of a MuJoCo site (LIBERO regions are sites)."""
        import mujoco

        data = self._sim_env.sim.data
        wxyz = np.zeros(4)
        mujoco.mju_mat2Quat(wxyz, np.asarray(data.get_site_xmat(site_name), dtype=np.float64).reshape(9))
        return np.concatenate([data.get_site_xpos(site_name), wxyz[[1, 2, 3, 0]]])
