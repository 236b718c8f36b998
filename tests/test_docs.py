"""The documentation cannot rot: the site builds with ``--strict``, the README stays short and keeps the
set-up contract, every repository path it or the site mentions exists, every fenced ``bash`` command
parses (Hydra commands are composed as ``--cfg job`` would, argparse commands parsed by their own
parser, anything else by ``bash -n``), and the README's Python example runs."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
DOCS = [README, *PAGES]
MAX_README_LINES = 250

# Files of *other* projects that the docs name (the reference code a family was checked against).
EXTERNAL_PATHS = {
    "examples/convert_jax_model_to_pytorch.py",  # openpi
    "scripts/serve_policy.py",  # openpi
    "assets/physical-intelligence/libero/norm_stats.json",  # inside an openpi checkpoint dir
    "examples/libero/main.py",  # openpi's LIBERO client
    "lerobot/envs/configs.py", "envs/utils.py", "processor/env_processor.py",  # LeRobot 0.6.1
    "policies/common/vla_utils.py",  # LeRobot 0.6.1
    "experiments/robot/openvla_utils.py", "vla-scripts/finetune.py",  # openvla-oft
    "llava_pythia/model/builder.py",  # TinyVLA
}
# Files a how-to tells the reader to create.
EXAMPLE_PATHS = {"conf/env/robosuite_wipe.yaml", "conf/policy/go_right.yaml"}
HYDRA_COMMANDS = {"rollout": "rollout", "serve": "serve"}
MODULE_COMMANDS = {
    "vla_gym.rollout": "rollout", "vla_gym.serve": "serve", "vla_gym.report": "report", "vla_gym.merge": "merge",
    "vla_gym.policies.tiny_checkpoints": "checkpoints",
}
ARGPARSE_MAINS = {
    "report": "vla_gym.report.cli", "merge": "vla_gym.merge", "checkpoints": "vla_gym.policies.tiny_checkpoints",
    "envs": "vla_gym.cli:envs_main", "policies": "vla_gym.cli:policies_main",
}
# Everything from this on is a CLI flag of Hydra apps that only changes what is printed or launched.
HYDRA_FLAGS = {"-m", "--multirun", "--cfg", "job", "hydra", "all", "--help", "-h", "--hydra-help", "--info"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ------------------------------------------------------------------------------------ extraction
def fenced_blocks(path: Path, lang: str) -> list[str]:
    """The bodies of the ```lang fenced blocks of a markdown file (indented fences too)."""
    return [re.sub(r"(?m)^" + re.escape(indent), "", body) for indent, body in
            re.findall(rf"(?ms)^([ \t]*)```{lang}[ \t]*\n(.*?)^\1```", path.read_text())]


def bash_commands(path: Path) -> list[str]:
    """One string per logical command line (backslash continuations joined) of the bash blocks."""
    out = []
    for block in fenced_blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                out.append(line.strip())
    return out


COMMANDS = [(_rel(p), c) for p in DOCS for c in bash_commands(p)]


# -------------------------------------------------------------------------------------- checking
class _Parsed(Exception):
    """Raised by the patched ``parse_args`` once the real parser has accepted the arguments."""


def _parse_only(main, args: list[str]) -> None:
    """Run ``main(args)`` until its argparse parser has parsed ``args``; fail if the parser refuses them."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, a=None, namespace=None):
        real(self, a, namespace)
        raise _Parsed

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
        try:
            main(args)
        except _Parsed:
            return
        except SystemExit as e:
            assert e.code in (0, None), f"the parser refused {args}"
            return
    pytest.fail(f"{main} returned without parsing its arguments")


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """Hydra overrides with every sweep (``a,b``, ``range``) replaced by its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for o, text in zip(OverridesParser.create().parse_overrides(overrides), overrides):
        if o.is_sweep_override():
            out.append(f"{text.split('=', 1)[0]}={next(iter(o.sweep_string_iterator()))}")
        else:
            out.append(text)
    return out


def check_hydra(config_name: str, args: list[str]) -> None:
    """Compose ``args`` as ``python -m vla_gym.<config_name> ARGS --cfg job`` would, without running."""
    from hydra import compose, initialize_config_module

    from vla_gym.config import CONFIG_MODULE, check_overrides, register_configs

    overrides = [a for a in args if a not in HYDRA_FLAGS]
    assert all("=" in o for o in overrides), f"not a Hydra override in {overrides}"
    check_overrides([o for o in overrides if not o.startswith("-")], config_name)
    register_configs()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        compose(config_name, overrides=_first_of_sweeps(overrides), return_hydra_config=True)


def check_vla_gym(args: list[str]) -> None:
    """A ``vla-gym ...`` command line."""
    if not args or args[0].startswith("-"):
        assert not args or args[0] in ("-h", "--help", "-sc", "--shell-completion", "-V", "--version"), args
        return
    sub, rest = args[0], args[1:]
    from vla_gym.cli import SUBCOMMANDS

    assert sub in SUBCOMMANDS, f"vla-gym has no command {sub!r}"
    if sub in HYDRA_COMMANDS:
        if any(a in ("-h", "--help") for a in rest):
            return
        check_hydra(HYDRA_COMMANDS[sub], rest)
        return
    target = ARGPARSE_MAINS[sub]
    module, _, func = target.partition(":")
    _parse_only(getattr(importlib.import_module(module), func or "main"), rest)


EXTERNAL_MODULES = ("pip", "venv")


def check_python(args: list[str]) -> None:
    """``python -m module ARGS`` or ``python path/to/script.py ARGS``."""
    if args[0] == "-m":
        module, rest = args[1], args[2:]
        if module in EXTERNAL_MODULES:
            return  # another tool's command line (installing a throwaway venv), not ours to parse
        if module == "vla_gym":
            check_vla_gym(rest)
        elif module in MODULE_COMMANDS:
            check_vla_gym([MODULE_COMMANDS[module], *rest])
        else:
            assert importlib.util.find_spec(module) is not None, f"no module {module}"
            _parse_only(importlib.import_module(module).main, rest)
        return
    script = ROOT / args[0]
    assert script.is_file(), f"{args[0]} does not exist"
    source = script.read_text()
    for flag in (a.split("=", 1)[0] for a in args[1:] if a.startswith("--")):
        assert f'"{flag}"' in source, f"{args[0]} has no option {flag}"


def check_make(args: list[str]) -> None:
    targets = set(re.findall(r"(?m)^([\w-]+):", (ROOT / "Makefile").read_text()))
    for a in args:
        if a.startswith("ARGS="):
            check_hydra("rollout", shlex.split(a.split("=", 1)[1]))
        elif "=" not in a:
            assert a in targets, f"the Makefile has no target {a!r}"


def check_command(line: str) -> None:
    """Parse one documented command line as deeply as its program allows, without running it."""
    syntax = subprocess.run(["bash", "-n", "-c", line], capture_output=True, text=True)
    assert syntax.returncode == 0, f"bash cannot parse {line!r}: {syntax.stderr}"
    words = shlex.split(line, comments=True)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words:
        return
    prog, args = Path(words[0]).name, words[1:]
    if prog == "vla-gym":
        check_vla_gym(args)
    elif prog in ("python", "python3"):
        check_python(args)
    elif prog == "make":
        check_make(args)


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_documented_command_parses(page: str, line: str) -> None:
    check_command(line)


def test_commands_are_found_and_checked_deeply() -> None:
    deep = [c for _, c in COMMANDS if re.match(r"(\w+=\S+ )*(vla-gym|python3? |make )", c)]
    assert len(COMMANDS) > 40 and len(deep) > 30
    with pytest.raises(SystemExit):  # a misspelt key is caught, as on the command line
        check_command("vla-gym rollout env=robosuite_lift episodes=2")
    with pytest.raises(Exception):  # noqa: B017 - Hydra's own error type for a missing option
        check_command("python -m vla_gym.rollout policy=no_such_policy")
    with pytest.raises(AssertionError):
        check_command("vla-gym merge --no-such-flag rollouts")


# -------------------------------------------------------------------------------------- paths
PATH_RE = re.compile(r"(?<![\w./:-])((?:[\w.-]+/)+[\w.-]+\.(?:py|yaml|md|npz|png|json))(?![\w/])")


def mentioned_paths(path: Path) -> list[str]:
    text = re.sub(r"https?://\S+", "", path.read_text())
    return sorted({m for m in PATH_RE.findall(text) if "<" not in m})


@pytest.mark.parametrize("page", [_rel(p) for p in DOCS])
def test_every_mentioned_path_exists(page: str) -> None:
    doc = ROOT / page
    missing = []
    for rel in mentioned_paths(doc):
        if rel in EXTERNAL_PATHS | EXAMPLE_PATHS:
            continue
        if not ((ROOT / rel).exists() or (doc.parent / rel).exists() or (ROOT / "docs" / rel).exists()):
            missing.append(rel)
    assert not missing, f"{page} mentions paths that do not exist: {missing}"


def test_readme_links_resolve() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local and all((ROOT / link).exists() for link in local), [k for k in local if not (ROOT / k).exists()]


def test_path_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text("see `vla_gym/envs/contract.py` and `envs/contract.py`")
    assert mentioned_paths(page) == ["envs/contract.py", "vla_gym/envs/contract.py"]
    assert not (ROOT / "vla_gym/envs/contract.py").exists() and (ROOT / "envs/contract.py").exists()


# ------------------------------------------------------------------------------------- README
def test_readme_is_short_and_starts_with_the_setup_contract() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    first = fenced_blocks(README, "bash")[0].splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make rollout", "make test"]


def test_readme_python_example_runs(tmp_path: Path) -> None:
    (example,) = [b for b in fenced_blocks(README, "python") if "vla_gym.evaluate" in b]
    assert 'if __name__ == "__main__":' in example
    script = tmp_path / "example.py"
    script.write_text(example)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert float(r.stdout.strip().splitlines()[-1]) >= 0 and (tmp_path / "rollouts/readme_example/results.json").exists()


# --------------------------------------------------------------------------------------- site
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra: pip install 'vla_gym[docs]'")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                                   "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-4000:]
    assert (tmp_path / "site/index.html").exists() and (tmp_path / "site/reference/api/policy/index.html").exists()


def test_every_page_is_in_the_nav() -> None:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # material's !!python/name tags
    nav = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)["nav"]

    def files(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for n in node:
                yield from files(n)
        elif isinstance(node, dict):
            for v in node.values():
                yield from files(v)

    listed = set(files(nav))
    pages = {str(p.relative_to(ROOT / "docs")) for p in PAGES}
    assert listed <= pages, f"nav lists missing pages: {sorted(listed - pages)}"
    other_branches = {"fidelity-pi0.md", "fidelity-tinyvla-oft.md", "server.md", "architecture.md"}
    assert pages - listed <= other_branches, f"pages missing from the nav: {sorted(pages - listed - other_branches)}"
