"""The project's import graph, read statically (imports inside functions too), and its cycles.

A cycle hidden by function-level imports works until someone moves one import; the test that
uses this fails on any cycle, so the layering (records -> store -> runner, build -> workers/server)
stays one-way. Mirrors pyproject's ``package-dir`` (envs/ -> vla_gym.envs, ...).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Import name -> file of every module under the project's mapped package folders."""
    pp = tomllib.loads((root / "pyproject.toml").read_text())
    dirs = pp.get("tool", {}).get("setuptools", {}).get("package-dir") or {}
    roots = {"vla_gym": root / "vla_gym", **{name: root / folder for name, folder in dirs.items() if name}}
    out = {}
    for name, folder in roots.items():
        for f in folder.rglob("*.py"):
            parts = [p for p in f.relative_to(folder).with_suffix("").parts if p != "__init__"]
            out[".".join([name, *parts])] = f
    return out


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    target = node.module or ""
    if node.level:
        parts = base.split(".")
        parts = parts[: len(parts) - (node.level - 1)]
        target = ".".join(parts + ([node.module] if node.module else []))
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> project modules it imports anywhere in its body."""
    mods = modules(root)
    known = set(mods)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(m, f, node, known):
                    while t and t not in known:
                        t = t.rsplit(".", 1)[0] if "." in t else ""
                    if t and t != m:
                        edges[m].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out
