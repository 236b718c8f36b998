"""Packaging: envs/ and policies/ install as vla_gym.envs / vla_gym.policies, conf/ ships."""

from __future__ import annotations

import subprocess
import tomllib
import zipfile
from pathlib import Path

from tests.conftest import PYTHON

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"vla_gym": "vla_gym", "vla_gym.envs": "envs", "vla_gym.policies": "policies", "vla_gym.conf": "conf"}


def _tree_packages() -> set[str]:
    found = set()
    for name, folder in PACKAGE_DIRS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    return found


def test_pyproject_lists_every_package_in_the_tree():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == PACKAGE_DIRS
    missing = _tree_packages() - set(config["packages"])
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_env_layer_imports_without_torch(subprocess_env, tmp_path):
    code = ("import sys, vla_gym, vla_gym.envs, vla_gym.policies, vla_gym.rollout, vla_gym.policies.scripted;"
            "assert 'torch' not in sys.modules, 'torch imported'; import envs")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env, timeout=120,
                          cwd=tmp_path)
    # outside the repo root `import envs` must fail: the folders install only as vla_gym.envs/.policies
    assert "No module named 'envs'" in proc.stderr, proc.stderr


def test_code_never_imports_top_level_envs_or_policies():
    offenders = []
    for folder in ("vla_gym", "envs", "policies", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for line in path.read_text().splitlines():
                if line.strip().startswith(("import envs", "from envs", "import policies", "from policies")):
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, offenders


def test_wheel_ships_envs_policies_and_conf(tmp_path):
    proc = subprocess.run([PYTHON, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("vla_gym-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("vla_gym/envs/libero.py", "vla_gym/policies/scripted.py", "vla_gym/conf/rollout.yaml",
                     "vla_gym/conf/env/libero_spatial.yaml", "vla_gym/conf/policy/scripted.yaml",
                     "vla_gym/rollout.py"):
        assert required in names, f"{required} missing from the wheel"
    assert not any(n.startswith(("envs/", "policies/", "conf/")) for n in names)
