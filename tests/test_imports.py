"""No import cycles, and every core module imports on its own in a fresh interpreter."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import PYTHON
from tests.import_graph import cycles, graph, modules

IMPORTABLE = sorted(m for m in modules() if not m.endswith("__main__"))  # __main__ modules run their CLI
CORE = [m for m in IMPORTABLE if not m.startswith(("vla_gym.policies.", "vla_gym.conf"))]
"""Runner, store, report, envs and perturbations; policy families pull in torch (see the slow test)."""


def test_the_project_has_no_import_cycle():
    found = cycles(graph())
    assert found == [], "import cycle(s): " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_core_module_imports_in_one_fresh_interpreter():
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    proc = subprocess.run([PYTHON, "-c", code, *CORE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("module", IMPORTABLE)
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    """Each module imported first, alone: an import-order dependency (a hidden cycle) fails here."""
    code = f"import importlib\ntry:\n    importlib.import_module({module!r})\nexcept ModuleNotFoundError as e:\n" \
           "    if (e.name or '').startswith('vla_gym'):\n        raise\n    print('skip: optional dependency', e.name)\n"
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
