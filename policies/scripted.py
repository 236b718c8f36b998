"""A scripted pick-and-place expert that reads privileged object poses.

It needs no weights and really succeeds, which makes it the embedded default of the
rollout command and a sanity check of the whole stack (env, controller conventions, runner,
videos). It reads ``obs["privileged"]`` -- ``goal`` (e.g. ``"on bowl_1 plate_1"``; several
predicates separated by ``;`` are done in order), ``poses`` and world ``boxes`` -- and the
end-effector position from ``obs["state"]``.

Supported goals: ``lift X``, ``on X Y`` and ``in X Y`` (Y an object, a region site or a
point): robosuite Lift / Stack / PickPlaceCan and the pick-and-place tasks of LIBERO
(all of libero_spatial and libero_object, the pick/place tasks of libero_goal and
libero_10). Other goals (open a drawer, turn on the stove) raise ``UnsupportedTask``.

Grasps are top-down with the default hand orientation, whose fingers close along the world
y axis. Hollow objects (bowls, plates, baskets) are grasped at the rim; everything else at
its centre, a few centimetres below its top. A grasp that did not lift the object is retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vla_gym.envs.contract import GRIPPER_CLOSE as CLOSE, GRIPPER_OPEN as OPEN, OSC_POS_METRES_PER_UNIT
from vla_gym.policy import (
    ActionChunk,
    ChunkExecution,
    Observation,
    Policy,
    PolicyInfo,
    PolicyInputs,
    reset_targets,
    resolve_env_ids,
)

RIM_GRASP_KEYWORDS = ("bowl", "plate", "basket", "tray")


class UnsupportedTask(ValueError):
    """The task's goal is not a pick-and-place the scripted expert can do."""


@dataclass
class _Waypoint:
    target: np.ndarray  # eef position goal
    gripper: float
    tol: float = 0.01
    max_steps: int = 60
    speed: float = 1.0  # cap on |a[:3]|
    hold: int = 0  # extra steps to stay once reached (gripper closing/opening)


class ScriptedPickPlacePolicy(Policy):
    """Privileged scripted expert for pick-and-place goals, one plan per env.

    Args:
        lift_height: How high (m) above its start the object is carried between pick and place.
        grasp_depth: How far (m) below an object's top the fingers close on solid objects.
        max_grasp_attempts: Regrasp attempts per object before giving up.
    """

    inputs = PolicyInputs(cameras=(), uses_state=True, uses_privileged=True)
    execution = ChunkExecution(mode="open_loop", replan_steps=1)
    batch_wait_ms = 0.0  # microseconds per call: parallel envs never wait to share one

    def __init__(self, lift_height: float = 0.12, grasp_depth: float = 0.025, max_grasp_attempts: int = 3) -> None:
        self.lift_height = lift_height
        self.grasp_depth = grasp_depth
        self.max_grasp_attempts = max_grasp_attempts
        self._episodes: dict[int, _PickPlaceEpisode] = {}

    def reset(self, env_ids: Sequence[int] | None = None, seeds: Sequence[int | None] | None = None) -> None:
        """Forget the plan of ``env_ids`` (all when None); it is re-made from the next observation."""
        if env_ids is None:
            self._episodes.clear()
        for env_id, _ in reset_targets(env_ids, seeds):
            self._episodes.pop(env_id, None)

    def act(self, observations: Sequence[Observation], env_ids: Sequence[int] | None = None) -> ActionChunk:
        """The expert's next action for each env, from its privileged observation."""
        ids = resolve_env_ids(observations, env_ids)
        actions = []
        for env_id, obs in zip(ids, observations):
            if env_id not in self._episodes:
                self._episodes[env_id] = _PickPlaceEpisode(self.lift_height, self.grasp_depth, self.max_grasp_attempts)
            actions.append(self._episodes[env_id].act(obs))
        return ActionChunk(np.stack(actions)[:, None, :])

    def info(self) -> PolicyInfo:
        """Name."""
        return PolicyInfo(name="scripted")


class _PickPlaceEpisode:
    """The expert's plan for one episode of one env (waypoints, grasp attempts, predicates)."""

    def __init__(self, lift_height: float, grasp_depth: float, max_grasp_attempts: int) -> None:
        self.lift_height = lift_height
        self.grasp_depth = grasp_depth
        self.max_grasp_attempts = max_grasp_attempts
        self._plan: list[_Waypoint] = []
        self._steps_in_wp = 0
        self._held = 0
        self._predicates: list[list[str]] | None = None
        self._attempts = 0
        self._phase = "plan"
        self._obj_start_z = 0.0

    def act(self, observation: Observation) -> np.ndarray:
        """The next (7,) action for this episode."""
        priv = observation.get("privileged")
        if priv is None:
            raise ValueError("the scripted expert needs obs['privileged']; build the env with privileged=True")
        eef = np.asarray(observation["state"][:3], dtype=np.float64)
        if self._predicates is None:
            self._predicates = self._parse_goal(priv["goal"])
        if not self._plan:
            self._replan(priv, eef)
        if not self._plan:  # all predicates done: hold still, gripper open
            return np.array([0, 0, 0, 0, 0, 0, OPEN], dtype=np.float32)
        wp = self._plan[0]
        action = self._servo(eef, wp)
        self._advance(eef, wp)
        return action

    # ------------------------------------------------------------------ planning
    @staticmethod
    def _parse_goal(goal: str) -> list[list[str]]:
        preds = [p.split() for p in goal.split(";") if p.strip()]
        for p in preds:
            if not ((p[0] == "lift" and len(p) == 2) or (p[0] in ("on", "in") and len(p) == 3)):
                raise UnsupportedTask(
                    f"scripted expert handles 'lift X', 'on X Y', 'in X Y' goals; this task's goal is {goal!r}"
                )
        return preds

    def _replan(self, priv: dict, eef: np.ndarray) -> None:
        """Make the waypoints for the next step of the current predicate."""
        if not self._predicates:
            return
        pred = self._predicates[0]
        obj = pred[1]
        box = np.asarray(priv["boxes"][obj], dtype=np.float64)
        if self._phase == "plan":
            self._attempts += 1
            self._obj_start_z = box[2]
            self._plan = self._pick_waypoints(obj, box, eef)
            self._phase = "check_grasp"
        elif self._phase == "check_grasp":
            lifted = box[2] > self._obj_start_z + 0.03
            if not lifted and self._attempts < self.max_grasp_attempts:
                self._phase = "plan"
                self._plan = [_Waypoint(eef + [0, 0, 0.05], OPEN, max_steps=10, hold=5)]
                return
            if pred[0] == "lift":
                self._predicates.pop(0)
                self._phase = "plan"
                self._attempts = 0
                self._plan = [_Waypoint(eef + [0, 0, 0.05], CLOSE, max_steps=30, hold=10)]
                return
            self._plan = self._place_waypoints(pred[0], box, np.asarray(priv["boxes"][pred[2]], dtype=np.float64), eef)
            self._phase = "placed"
        elif self._phase == "placed":
            self._predicates.pop(0)
            self._phase = "plan"
            self._attempts = 0
            if self._predicates:
                self._replan(priv, eef)

    def _pick_waypoints(self, name: str, box: np.ndarray, eef: np.ndarray) -> list[_Waypoint]:
        lo, hi = box[:3], box[3:]
        center = (lo + hi) / 2
        top = hi[2]
        grasp = center.copy()
        if any(k in name for k in RIM_GRASP_KEYWORDS):
            # fingers close along world y: straddle the rim wall on the +y side
            half_y = (hi[1] - lo[1]) / 2
            grasp[1] = center[1] + max(half_y - 0.015, 0.0)
            grasp[2] = top - 0.02
        else:
            grasp[2] = max(top - self.grasp_depth, lo[2] + 0.01)
        above = grasp + [0, 0, 0.10]
        safe_z = max(eef[2], above[2])
        return [
            _Waypoint(np.array([eef[0], eef[1], safe_z]), OPEN, tol=0.02, max_steps=30, speed=1.0),
            _Waypoint(np.array([above[0], above[1], safe_z]), OPEN, tol=0.015, max_steps=60, speed=1.0),
            _Waypoint(above, OPEN, tol=0.01, max_steps=40, speed=0.6),
            _Waypoint(grasp, OPEN, tol=0.008, max_steps=50, speed=0.3),
            _Waypoint(grasp, CLOSE, tol=1.0, max_steps=15, hold=12),
            _Waypoint(grasp + [0, 0, self.lift_height], CLOSE, tol=0.015, max_steps=50, speed=0.6),
        ]

    def _place_waypoints(self, relation: str, obj_box: np.ndarray, target_box: np.ndarray,
                         eef: np.ndarray) -> list[_Waypoint]:
        obj_bottom_below_eef = eef[2] - obj_box[2]
        t_lo, t_hi = target_box[:3], target_box[3:]
        t_center = (t_lo + t_hi) / 2
        obj_center_offset = (obj_box[:2] + obj_box[3:5]) / 2 - eef[:2]  # where the object hangs
        xy = t_center[:2] - obj_center_offset
        clearance = 0.03 if relation == "on" else 0.05
        release_z = t_hi[2] + obj_bottom_below_eef + clearance
        carry_z = max(eef[2], release_z + 0.08)
        return [
            _Waypoint(np.array([eef[0], eef[1], carry_z]), CLOSE, tol=0.02, max_steps=30, speed=0.8),
            _Waypoint(np.array([xy[0], xy[1], carry_z]), CLOSE, tol=0.015, max_steps=80, speed=0.8),
            _Waypoint(np.array([xy[0], xy[1], release_z]), CLOSE, tol=0.01, max_steps=50, speed=0.4),
            _Waypoint(np.array([xy[0], xy[1], release_z]), OPEN, tol=1.0, max_steps=12, hold=10),
            _Waypoint(np.array([xy[0], xy[1], carry_z]), OPEN, tol=0.02, max_steps=30, speed=0.6),
        ]

    # ------------------------------------------------------------------ control
    @staticmethod
    def _servo(eef: np.ndarray, wp: _Waypoint) -> np.ndarray:
        delta = (wp.target - eef) / OSC_POS_METRES_PER_UNIT
        norm = np.linalg.norm(delta)
        if norm > wp.speed:
            delta *= wp.speed / norm
        return np.concatenate([delta, [0.0, 0.0, 0.0, wp.gripper]]).astype(np.float32)

    def _advance(self, eef: np.ndarray, wp: _Waypoint) -> None:
        self._steps_in_wp += 1
        reached = np.linalg.norm(wp.target - eef) < wp.tol
        if reached:
            self._held += 1
        if (reached and self._held > wp.hold) or self._steps_in_wp >= wp.max_steps:
            self._plan.pop(0)
            self._steps_in_wp = 0
            self._held = 0
