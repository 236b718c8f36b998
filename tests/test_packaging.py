"""Packaging: envs/, policies/ and conf/ install as vla_gym.envs / .policies / .conf, and the
package list comes from the tree (setuptools discovery), so a new subpackage ships unlisted."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

from tests.conftest import PYTHON

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"vla_gym": "vla_gym", "vla_gym.envs": "envs", "vla_gym.policies": "policies",
                "vla_gym.conf": "conf"}
BUILD_INPUTS = ("pyproject.toml", "README.md", *PACKAGE_DIRS.values())
# Added to a copy of the tree before building: none of them is named in pyproject.toml.
PROBES = ("policies/_probe_family/__init__.py", "policies/_probe_family/nested/__init__.py",
          "envs/_probe_env/__init__.py", "vla_gym/_probe_module/__init__.py")


def _tree_packages(root: Path) -> dict[str, Path]:
    """Installed name -> folder in ``root`` of every package (``__init__.py``) under the mapped folders."""
    found = {}
    for name, folder in PACKAGE_DIRS.items():
        for init in (root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(root / folder)
            if "__pycache__" not in rel.parts:
                found[".".join([name, *rel.parts])] = init.parent
    return found


def _copy_tree_with_probes(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    dest.mkdir()
    for item in BUILD_INPUTS:
        src = ROOT / item
        (shutil.copytree(src, dest / item, ignore=ignore) if src.is_dir() else shutil.copy2(src, dest / item))
    for probe in PROBES:
        (dest / probe).parent.mkdir(parents=True, exist_ok=True)
        (dest / probe).write_text("PROBE = True\n")
    (dest / "conf/perturbation/_probe_option.yaml").write_text("# probe\n")
    return dest


def test_wheel_ships_every_package_of_the_tree_including_new_ones(tmp_path):
    src = _copy_tree_with_probes(tmp_path / "src")
    out = tmp_path / "wheel"
    proc = subprocess.run([PYTHON, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("vla_gym-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    expected = _tree_packages(src)
    for probe in ("vla_gym.policies._probe_family", "vla_gym.policies._probe_family.nested",
                  "vla_gym.envs._probe_env", "vla_gym._probe_module"):
        assert probe in expected
    missing = sorted(pkg for pkg in expected if f"{pkg.replace('.', '/')}/__init__.py" not in names)
    assert not missing, f"packages in the tree but not in the wheel: {missing}"
    assert "vla_gym/conf/perturbation/_probe_option.yaml" in names

    for folder, installed in (("envs", "vla_gym/envs"), ("policies", "vla_gym/policies"),
                              ("vla_gym/report", "vla_gym/report"),
                              ("vla_gym/perturbations", "vla_gym/perturbations")):
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                rel = path.relative_to(ROOT / folder).as_posix()
                assert f"{installed}/{rel}" in names, f"{folder}/{rel} missing from the wheel"
    for path in (ROOT / "conf").rglob("*.yaml"):
        rel = path.relative_to(ROOT / "conf").as_posix()
        assert f"vla_gym/conf/{rel}" in names, f"conf/{rel} missing from the wheel"
    assert "vla_gym/rollout.py" in names
    assert not any(n.startswith(("envs/", "policies/", "conf/")) for n in names)


def test_installed_package_maps_every_package_of_the_tree(subprocess_env, tmp_path):
    """The (editable) install resolves each package of the tree to its folder, from outside the repo."""
    expected = _tree_packages(ROOT)
    code = ("import importlib.util, json, sys;"
            "print(json.dumps({n: importlib.util.find_spec(n).origin for n in sys.argv[1:]}))")
    proc = subprocess.run([PYTHON, "-c", code, *expected], capture_output=True, text=True, env=subprocess_env,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    origins = json.loads(proc.stdout)
    for name, folder in expected.items():
        assert origins[name] == str(folder / "__init__.py"), (name, origins[name])


def test_env_layer_imports_without_torch(subprocess_env, tmp_path):
    code = ("import sys, vla_gym, vla_gym.envs, vla_gym.policies, vla_gym.rollout, vla_gym.policies.scripted;"
            "assert 'torch' not in sys.modules, 'torch imported'; import envs")
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env,
                          timeout=120, cwd=tmp_path)
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
