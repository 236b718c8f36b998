"""``vla-gym``: one command for every vla_gym entry point.

``vla-gym <sub-command> ...`` dispatches to the module that ``python -m vla_gym.<module>`` runs,
so both spellings behave the same and Hydra overrides pass through untouched::

    vla-gym rollout env=libero_object policy=openvla_oft policy.checkpoint=/ckpt
    vla-gym serve policy=random port=8000
    vla-gym report rollouts/multirun/2026-12-01/10-00-00
    vla-gym merge --out merged shard_dirs...
    vla-gym checkpoints /tmp/tiny --families openvla
    vla-gym envs libero_spatial
    vla-gym policies

``rollout`` and ``serve`` are Hydra apps: ``--cfg job`` prints the composed config without running,
``--hydra-help`` shows Hydra's own help and ``vla-gym -sc install=bash`` prints Hydra's shell
completion for both (``eval "$(vla-gym -sc install=bash)"``).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Sequence

PROG = "vla-gym"


@dataclass(frozen=True)
class SubCommand:
    """One ``vla-gym`` sub-command: its one-line summary, the module it runs and its help text."""

    summary: str
    module: str
    hydra: bool = False
    help: str = ""


def _group_options(group: str) -> list[str]:
    """Names of the YAML files of a ``conf/<group>/`` config group (no import of the configs)."""
    try:
        files = resources.files("vla_gym.conf").joinpath(group).iterdir()
        return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError):
        return []


def _rollout_help() -> str:
    return f"""\
usage: {PROG} rollout [KEY=VALUE ...] [-m] [--cfg job] [--hydra-help]

Evaluate a policy on simulated tasks: videos, episodes.jsonl and results.json in one run dir.
Same as `python -m vla_gym.rollout`; every argument is a Hydra override.

Common keys (all: `{PROG} rollout --cfg job`; reference: docs/reference/config.md):
  env=NAME                  suite or task: {", ".join(_group_options("env"))}
  policy=NAME               {", ".join(_group_options("policy"))}
  policy.checkpoint=DIR     local checkpoint directory (torch policies)
  quantization=NAME         {", ".join(_group_options("quantization"))}
  perturbation=NAME         e.g. camera, lighting, latency (conf/perturbation/); perturbation.strength=0..1
  tracker=NAME              {", ".join(_group_options("tracker")) or "none"} (where results are also logged)
  tasks=SPEC                default | all | an index | a task name | [0,3]
  episodes_per_task=N       episodes per task (LIBERO episode e starts from init state e)
  seed=N                    episode e uses seed + e
  num_envs=N                env worker processes sharing one batched policy call per step
  shard=i/n                 run shard i of n of the planned episodes (merge with `{PROG} merge --out`)
  video.enabled=BOOL        write per-episode videos (default true)
  hydra.run.dir=DIR         the run directory (re-running into it resumes)
  -m KEY=A,B ...            multirun: one job per combination (hydra/launcher=submitit_slurm | ray)

Examples:
  {PROG} rollout                                   # scripted expert on 2 LIBERO-Spatial tasks
  {PROG} rollout env=libero_object policy=openvla_oft policy.checkpoint=/ckpt/oft tasks=all num_envs=4
  {PROG} rollout env=robosuite_lift policy=random video.enabled=false --cfg job   # print, do not run
"""


def _serve_help() -> str:
    return f"""\
usage: {PROG} serve [KEY=VALUE ...] [--cfg job] [--hydra-help]

Serve a vla_gym policy over openpi's websocket protocol (openpi clients and policy=remote connect).
Same as `python -m vla_gym.serve`; every argument is a Hydra override.

Common keys (all: `{PROG} serve --cfg job`; reference: docs/reference/wire-protocol.md):
  policy=NAME               {", ".join(_group_options("policy"))}
  policy.checkpoint=DIR     local checkpoint directory (torch policies)
  quantization=NAME         {", ".join(_group_options("quantization"))}
  host=ADDR                 interface to bind (default 127.0.0.1; others only when set)
  port=N                    TCP port (0 = ephemeral; port_file=PATH writes the bound one)
  input_format=NAME         vla_gym (default, bit-identical) | openpi_libero (openpi's LIBERO client)
  api_key=KEY               required 'Authorization: Api-Key KEY' (default: $VLA_GYM_API_KEY)
  batch_window_ms=MS        batch requests of several clients arriving within MS (max_batch=N)

Examples:
  {PROG} serve policy=openvla_oft policy.checkpoint=/ckpt/oft quantization=int8 port=8000
  {PROG} serve policy=random input_format=openpi_libero
"""


SUBCOMMANDS: dict[str, SubCommand] = {
    "rollout": SubCommand("evaluate a policy in simulation (Hydra overrides)", "vla_gym.rollout", hydra=True),
    "serve": SubCommand("serve a policy over openpi's websocket protocol (Hydra overrides)", "vla_gym.serve",
                        hydra=True),
    "report": SubCommand("tables, plots, video gallery and sim-real metrics from run dirs", "vla_gym.report.cli",
                         help=f"Example:\n  {PROG} report rollouts/multirun/2026-12-01/10-00-00 --out report/"),
    "merge": SubCommand("one success table for several runs; --out merges the shards of one run",
                        "vla_gym.merge",
                        help=f"Examples:\n  {PROG} merge rollouts/multirun/2026-12-01/10-00-00 --by-task\n"
                             f"  {PROG} merge --out rollouts/spatial_oft/merged rollouts/spatial_oft"),
    "checkpoints": SubCommand("write tiny random checkpoints in the release layouts (tests, demos)",
                              "vla_gym.policies.tiny_checkpoints",
                              help=f"Example:\n  {PROG} checkpoints /tmp/tiny --families openvla\n"
                                   "  (then: vla-gym rollout policy=openvla_oft policy.checkpoint=/tmp/tiny/openvla-oft)"),
    "envs": SubCommand("list env suites, their tasks, instructions and init-state counts", "vla_gym.cli"),
    "policies": SubCommand("list policy families, their inputs and declared chunk execution", "vla_gym.cli"),
}


def _overview() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: {PROG} <command> [args ...]", "",
             "Evaluate vision-language-action policies in LIBERO and robosuite.", "", "commands:"]
    lines += [f"  {name:<{width}}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", f"`{PROG} <command> --help` explains one command; "
              f"`eval \"$({PROG} -sc install=bash)\"` enables Hydra's tab completion of overrides.",
              "Each command is also `python -m <module>` (vla_gym.rollout, vla_gym.serve, vla_gym.report, ...)."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- envs
def _env_configs() -> dict[str, dict]:
    """``conf/env`` name -> its YAML (id, kind, kwargs)."""
    import yaml

    out = {}
    root = resources.files("vla_gym.conf").joinpath("env")
    for name in _group_options("env"):
        out[name] = yaml.safe_load(root.joinpath(f"{name}.yaml").read_text()) or {}
    return out


def _suite_rows(suite: Any) -> list[tuple[str, str, int | str]]:
    """(name, instruction, number of init states) of every task the suite declares."""
    rows = []
    for i, task in enumerate(suite.tasks):
        instruction = suite.instructions[i] if i < len(suite.instructions) else "(the bddl's, read when the env is built)"
        try:
            n: int | str = suite.init_states(i) if suite.init_states is not None else "none (placements from the seed)"
        except Exception as e:  # noqa: BLE001 - a listing shows what it cannot read instead of stopping
            n = f"? ({type(e).__name__})"
        rows.append((task, instruction, n))
    return rows


def envs_main(argv: Sequence[str] | None = None) -> int:
    """``vla-gym envs [NAME ...]``: the env configs, or the tasks of the named ones (as each suite declares them)."""
    from vla_gym.envs import env_id
    from vla_gym.envs.libero import SUPPORTED_SUITES
    from vla_gym.envs.suite import SuiteError, describe

    p = argparse.ArgumentParser(
        prog=f"{PROG} envs", description="List env configs (env=NAME); with NAMEs, their tasks.",
        epilog=f"Examples:\n  {PROG} envs\n  {PROG} envs libero_spatial robosuite_lift\n"
               f"  {PROG} envs libero_spatial_lan   # a LIBERO-PRO suite, by its suite name",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help="conf/env config names or LIBERO(-PRO) suite names")
    args = p.parse_args(argv)
    configs = _env_configs()

    def suite_of(cfg: dict[str, Any]) -> Any:
        return describe(str(cfg["id"]), dict(cfg.get("kwargs") or {}))

    if not args.names:
        print(f"{'env=':<30} {'gymnasium id':<38} {'suite':<16} {'max steps':>9}")
        listed = set()
        for name, c in configs.items():
            try:
                suite = suite_of(c)
            except SuiteError as e:
                print(f"{name:<30} {c.get('id', ''):<34} error: {e}")
                continue
            listed.add(suite.name)
            print(f"{name:<30} {c.get('id', ''):<38} {suite.name:<16} {suite.max_episode_steps or '-':>9}")
        pro = [s for s in SUPPORTED_SUITES if s not in listed]
        print(f"\nLIBERO-PRO suites (gym ids {env_id('libero_spatial_lan')} style, or env=<base> "
              f"perturbation=libero_pro_*): {', '.join(pro)}")
        print(f"Tasks of one: {PROG} envs NAME")
        return 0
    for name in args.names:
        cfg = configs.get(name) or ({"id": env_id(name)} if name in SUPPORTED_SUITES else None)
        if cfg is None:
            hint = difflib.get_close_matches(name, [*configs, *SUPPORTED_SUITES], n=1)
            print(f"error: unknown env {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                  + f" (see `{PROG} envs`)", file=sys.stderr)
            return 2
        try:
            suite = suite_of(cfg)
        except SuiteError as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 2
        rows = _suite_rows(suite)
        print(f"{name} ({cfg['id']}, suite {suite.name}, max {suite.max_episode_steps} steps): {len(rows)} task(s)")
        for i, (task, instruction, n) in enumerate(rows):
            print(f"  {i:>2}  {task}\n      instruction: {instruction}\n      init states: {n}")
        print()
    return 0


# --------------------------------------------------------------------------------------- policies
def _describe_policy(name: str) -> dict[str, str]:
    """What ``conf/policy/<name>.yaml`` builds: class, inputs and chunk execution it declares."""
    import yaml

    cfg = yaml.safe_load(resources.files("vla_gym.conf").joinpath("policy", f"{name}.yaml").read_text()) or {}
    row = {"policy=": name, "class": str(cfg.get("_target_", "?")).rsplit(".", 1)[0], "inputs": "?",
           "execution": "?", "weights": "?"}
    try:
        from vla_gym.rollout import _policy_class

        cls = _policy_class(str(cfg["_target_"]))
    except Exception as e:  # noqa: BLE001 - e.g. the torch extra missing: say so on the row
        row["inputs"] = f"(cannot import: {type(e).__name__}: {str(e)[:60]})"
        return row
    inputs, ex = cls.inputs, cls.execution
    cams = cfg.get("cameras", list(inputs.cameras))  # families read cameras/image_size from their YAML
    size = cfg.get("image_size", inputs.image_size)
    parts = [f"{'+'.join(cams)} @{size if size is not None else 'processor'}" if cams else "no cameras"]
    parts += ["state"] * bool(inputs.uses_state or cfg.get("uses_state")) + ["privileged"] * inputs.uses_privileged
    row["class"] = f"{cls.__module__}.{cls.__qualname__}"
    row["inputs"] = ", ".join(parts)
    replan = cfg.get("replan_steps", ex.replan_steps)
    row["execution"] = f"{ex.mode}, {replan if replan is not None else 'whole chunk'}"
    if ex.mode == "temporal_ensemble":
        row["execution"] = f"{ex.mode} (every step)"
    row["weights"] = "yes" if getattr(cls, "loads_weights", False) else "no"
    return row


def policies_main(argv: Sequence[str] | None = None) -> int:
    """``vla-gym policies [NAME ...]``: each policy config, its class, inputs and execution."""
    p = argparse.ArgumentParser(
        prog=f"{PROG} policies",
        description="List policy configs (policy=NAME): class, declared inputs (cameras @ image size, state), "
                    "chunk execution (mode, actions executed per query) and whether it loads weights. "
                    "Imports each family (torch families need the torch extra).",
        epilog=f"Examples:\n  {PROG} policies\n  {PROG} policies openvla_oft pi05",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help="conf/policy config names (default: all)")
    args = p.parse_args(argv)
    known = _group_options("policy")
    for name in args.names:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            print(f"error: unknown policy {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                  + f" (known: {', '.join(known)})", file=sys.stderr)
            return 2
    rows = [_describe_policy(n) for n in (args.names or known)]
    cols = ["policy=", "inputs", "execution", "weights", "class"]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(f"{c:<{widths[c]}}" for c in cols).rstrip())
    for r in rows:
        print("  ".join(f"{r[c]:<{widths[c]}}" for c in cols).rstrip())
    print(f"\nOverride per run: chunk.mode=, chunk.replan_steps=, image_size=; details: {PROG} rollout --help")
    return 0


# ------------------------------------------------------------------------------------- dispatch
def _completion(argv: Sequence[str]) -> int:
    """Hydra's shell completion for ``vla-gym rollout|serve``: install scripts and answer queries."""
    spec = argv[1] if len(argv) > 1 else "install=bash"
    if not spec.startswith("query="):
        _hydra_completion("rollout", spec)  # prints Hydra's script, bound to this executable's name
        return 0
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if len(words) >= 2 and words[1] in SUBCOMMANDS and (len(words) > 2 or line.endswith(" ")):
        sub = SUBCOMMANDS[words[1]]
        if sub.hydra:  # Hydra completes the line without our sub-command word
            rest = line.split(words[1], 1)[1]
            os.environ["COMP_LINE"] = f"{words[0]}{rest}"
            os.environ["COMP_POINT"] = str(len(os.environ["COMP_LINE"]))
            _hydra_completion(words[1], spec)
        return 0
    prefix = words[1] if len(words) == 2 and not line.endswith(" ") else ""
    print(" ".join(n for n in SUBCOMMANDS if n.startswith(prefix)))
    return 0


def _hydra_completion(name: str, spec: str) -> None:
    """Run the Hydra app of ``vla_gym.<name>`` (config ``<name>``) with ``-sc <spec>`` only."""
    import importlib

    import hydra

    from vla_gym.config import CONFIG_MODULE, register_configs

    register_configs()
    task = importlib.import_module(f"vla_gym.{name}")._hydra_main
    sys.argv = [sys.argv[0], "-sc", spec]
    hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=name, version_base="1.3")(task)()


def _run_module(module: str, argv: list[str]) -> int:
    """Call ``module.main(argv)`` and turn its result into an exit status."""
    import importlib

    main: Callable[[list[str]], object] = importlib.import_module(module).main  # type: ignore[attr-defined]
    result = main(argv)
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vla-gym`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_overview())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from vla_gym import __version__

        print(f"{PROG} {__version__}")
        return 0
    if args[0] in ("-sc", "--shell-completion"):
        return _completion(args)
    name, rest = args[0], args[1:]
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        hint = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
        print(f"{PROG}: unknown command {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
              + f" (commands: {', '.join(SUBCOMMANDS)})", file=sys.stderr)
        return 2
    if name == "envs":
        return envs_main(rest)
    if name == "policies":
        return policies_main(rest)
    if sub.hydra:
        if any(a in ("-h", "--help") for a in rest):
            print(_rollout_help() if name == "rollout" else _serve_help())
            return 0
        if "" not in sys.path and os.getcwd() not in sys.path:
            # as `python -m vla_gym.<module>` does: a config's `_target_` or `env.id: module:Env-v0` may name
            # a module of the user's own project, run from its root
            sys.path.insert(0, os.getcwd())
        return _run_module(sub.module, rest)  # --hydra-help, --cfg job, -m, -sc: Hydra's own
    sys.argv[0] = f"{PROG} {name}"  # argparse's prog in usage lines
    if any(a in ("-h", "--help") for a in rest) and sub.help:
        try:
            _run_module(sub.module, ["--help"])
        except SystemExit:
            pass
        print(f"\n{sub.help}")
        return 0
    return _run_module(sub.module, rest)


if __name__ == "__main__":
    raise SystemExit(main())
