"""A small but real set of rollout run directories for the report tests.

Written with the real ``EpisodeRecord``/``aggregate`` and real (tiny) videos, so the report
reads exactly what the rollout writes. Success patterns are chosen so every rate below is a
hand-checkable fraction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from vla_gym.report.cli import main
from vla_gym.results import EpisodeRecord, aggregate, atomic_write_json, atomic_write_text

SUITE = "libero_spatial"
T1 = "pick_up_the_black_bowl_on_the_plate"
T2 = "put_the_bowl_on_the_stove"
# Markup and quotes in an instruction: the HTML must show it as text, not render it.
T1_INSTRUCTION = 'pick up the <b>black</b> bowl & "place" it'
T2_INSTRUCTION = "put the bowl on the stove"

# (run subdir, policy, perturbation, strength, {task: success pattern})
RUNS = [
    ("multirun/0", "alpha", "none", 0.0, {T1: [1, 1, 1, 0], T2: [1, 0, 0, 0]}),
    ("multirun/1", "beta", "none", 0.0, {T1: [1, 1, 0, 0], T2: [1, 1, 1, 1]}),
    ("multirun/2", "gamma", "none", 0.0, {T1: [0, 0, 0, 0], T2: [1, 1, 0, 0]}),
    ("sweep/0", "alpha", "camera", 0.5, {T1: [1, 0, 0, 0], T2: [0, 0, 0, 0]}),
    ("sweep/1", "alpha", "camera", 1.0, {T1: [0, 0, 0, 0], T2: [0, 0, 0, 0]}),
]
# (run subdir, task, episode) → video extension; one record points at a file that is absent.
VIDEOS = {("multirun/0", T1, 0): ".mp4", ("multirun/0", T1, 3): ".webm", ("multirun/1", T2, 0): ".mp4"}
MISSING_VIDEO = ("multirun/1", T1, 1)
ERROR_EPISODE = ("multirun/2", T1, 3)
N_EPISODES = sum(len(p) for *_, pats in RUNS for p in pats.values())

REAL_CSV = """policy,task,real_success,notes
alpha,pick_up_the_black_bowl_on_the_plate,0.6,
beta,pick_up_the_black_bowl_on_the_plate,70%,given as a percentage
gamma,libero_spatial/pick_up_the_black_bowl_on_the_plate,0.1,suite-qualified task
alpha,put_the_bowl_on_the_stove,0.2,
beta,put_the_bowl_on_the_stove,0.9,
gamma,put_the_bowl_on_the_stove,0.5,
delta,put_the_bowl_on_the_stove,0.3,no sim run: reported as unmatched
"""


def write_video(path: Path, n_frames: int = 12) -> None:
    """A tiny real video: a bright square moving over a dark 64×64 frame."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(n_frames):
        f = np.zeros((64, 64, 3), np.uint8)
        f[16:32, 4 * i % 48 : 4 * i % 48 + 16] = (255, 200, 50)
        frames.append(f)
    kwargs = {"codec": "libvpx-vp9"} if path.suffix == ".webm" else {}
    imageio.mimwrite(path, frames, fps=10, macro_block_size=1, **kwargs)


def build_runs(root: Path) -> None:
    """Write every run of ``RUNS`` (plus an empty run and Hydra files) under ``root``."""
    for sub, policy, pert, strength, patterns in RUNS:
        run_dir = root / sub
        run_dir.mkdir(parents=True)
        records = []
        for t_idx, (task, pattern) in enumerate(patterns.items()):
            for ep, ok in enumerate(pattern):
                video = None
                outcome = "success" if ok else "failure"
                ext = VIDEOS.get((sub, task, ep))
                if ext or (sub, task, ep) == MISSING_VIDEO:
                    video = f"videos/{SUITE}/{task}/ep{ep:03d}_{outcome}{ext or '.mp4'}"
                    if ext:
                        write_video(run_dir / video)
                records.append(
                    EpisodeRecord(
                        suite=SUITE,
                        task=task,
                        task_index=t_idx,
                        init_state_id=ep,
                        episode_index=ep,
                        seed=7 + ep,
                        instruction=T1_INSTRUCTION if task == T1 else T2_INSTRUCTION,
                        success=bool(ok),
                        steps=50 + 10 * ep,
                        sum_reward=float(ok),
                        wall_s=1.0,
                        video=video,
                        policy=policy,
                        error="RuntimeError: boom" if (sub, task, ep) == ERROR_EPISODE else None,
                        perturbation=pert,
                        perturbation_strength=strength,
                    )
                )
        atomic_write_text(run_dir / "episodes.jsonl", "".join(_json_line(r) for r in records))
        atomic_write_json(
            run_dir / "results.json",
            aggregate(
                records,
                meta={
                    "policy": policy,
                    "env": SUITE,
                    "perturbation": pert,
                    "perturbation_strength": strength,
                    "quantization": "none",
                    "policy_info": {},
                },
            ),
        )
    (root / "multirun" / "multirun.yaml").write_text("hydra: {}\n")
    (root / "multirun" / "0" / ".hydra").mkdir()
    (root / "multirun" / "0" / ".hydra" / "config.yaml").write_text("policy: alpha\n")
    (root / "sweep" / "2").mkdir()
    (root / "sweep" / "2" / "episodes.jsonl").write_text("")  # a run that has not finished an episode


def _json_line(r: EpisodeRecord) -> str:
    import json

    return json.dumps(asdict(r)) + "\n"


@dataclass
class Built:
    """Paths of the fixture runs and of the report generated from them."""

    root: Path
    out: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture runs, written once per session (video encoding is the slow part)."""
    root = tmp_path_factory.mktemp("runs")
    build_runs(root)
    return root


@pytest.fixture(scope="session")
def report(runs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The report over all fixture runs, with real rates, generated once via ``main(argv)``."""
    import contextlib
    import io

    real = runs_root / "real.csv"
    real.write_text(REAL_CSV)
    out = tmp_path_factory.mktemp("report")
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        rc = main(
            [str(runs_root / "multirun"), str(runs_root / "sweep"), "--out", str(out), "--real", str(real)]
        )
    assert rc == 0, se.getvalue()
    return Built(root=runs_root, out=out, stdout=so.getvalue(), stderr=se.getvalue())


# --- A hostile run directory: script in every string field, and in numeric fields as strings. ---

PAYLOADS = [
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=1</script>",
    '"><svg onload=window.__pwned=1>',
    "</script><script>window.__pwned=1;alert(1)</script>",
    "<!--<script>window.__pwned=1</script>",
    "'-alert(1)-'\u2028\u2029`${alert(1)}`",
    '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
    "javascript:window.__pwned=1",
    "$\\badcmd{$ & <b onmouseover=alert(1)>x</b>",
]
STRING_FIELDS = ["suite", "task", "instruction", "error", "policy", "perturbation"]
# Valid records only in their strings; the video names: an existing file named like markup, a
# relative name that starts like a javascript: URL (also a file), and a missing one.
HOSTILE_VIDEOS = [
    "videos/<img src=x onerror=window.__pwned=1>.mp4",
    "javascript:window.__pwned=1",
    'videos/"><svg onload=alert(1)>.webm',
]
# (field, bad value): each makes a record that must be reported with file:line and skipped.
HOSTILE_BAD_FIELDS = [
    ("seed", '<img src=x onerror="window.__pwned=1">'),
    ("steps", "<script>window.__pwned=1</script>"),
    ("episode_index", '"><svg onload=window.__pwned=1>'),
    ("task_index", "<img src=x onerror=alert(1)>"),
    ("init_state_id", "<img src=x onerror=window.__pwned=1>"),
    ("sum_reward", "<img src=x onerror=window.__pwned=1>"),
    ("perturbation_strength", "<img src=x onerror=window.__pwned=1>"),
    ("success", "false"),
    ("steps", "forty"),
    ("steps", True),
    ("wall_s", float("nan")),
    ("video", "/etc/passwd"),
    ("video", "../../../outside.mp4"),
    ("policy", "<img src=x onerror=window.__pwned=1>\x1b[2J"),
    ("extra", "<img src=x onerror=window.__pwned=1>"),
]
HOSTILE_RAW_LINES = ["<script>window.__pwned=1</script>", '["<img src=x onerror=window.__pwned=1>"]']
N_HOSTILE_VALID = len(PAYLOADS)


def hostile_record(i: int) -> dict:
    """Record ``i``: valid types, every string field a payload (rotated so each field sees each)."""
    rec = asdict(
        EpisodeRecord(
            suite="",
            task="",
            task_index=i % 3,
            init_state_id=i,
            episode_index=i,
            seed=i,
            instruction="",
            success=i % 2 == 0,
            steps=10 + i,
            sum_reward=0.0,
            wall_s=1.0,
            perturbation_strength=0.5,
        )
    )
    for k, name in enumerate(STRING_FIELDS):
        rec[name] = PAYLOADS[(i + k) % len(PAYLOADS)]
    rec["video"] = HOSTILE_VIDEOS[i] if i < len(HOSTILE_VIDEOS) else None
    rec["extra"] = {"note": PAYLOADS[i]}
    return rec


def build_hostile_run(run_dir: Path) -> Path:
    """Write the hostile ``episodes.jsonl`` (valid records first, then the bad lines)."""
    import json

    run_dir.mkdir(parents=True)
    lines = [json.dumps(hostile_record(i)) for i in range(N_HOSTILE_VALID)]
    for field_name, bad in HOSTILE_BAD_FIELDS:
        lines.append(json.dumps({**hostile_record(0), field_name: bad}))
    lines += HOSTILE_RAW_LINES
    (run_dir / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    for video in HOSTILE_VIDEOS[:2]:
        write_video(run_dir / "tmp.mp4")
        (run_dir / video).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / "tmp.mp4").rename(run_dir / video)
    return run_dir


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The report of the hostile run, written into the run dir itself (so a video's relative
    path is its own name: ``javascript:...`` must stay a file path)."""
    import contextlib
    import io

    run_dir = build_hostile_run(tmp_path_factory.mktemp("hostile") / "run")
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        rc = main([str(run_dir), "--out", str(run_dir)])
    assert rc == 0, se.getvalue()
    return Built(root=run_dir, out=run_dir, stdout=so.getvalue(), stderr=se.getvalue())
