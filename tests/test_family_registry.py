"""Policy families are discovered, not listed (issue 20): a family's tiny-checkpoint writer is its
``make_tiny.TINY``, its quantization skip list is its class's ``quantization_skip``.

A family kept in the test tree (``tests/families/fake_family``) is written by the shared CLI and
built, quantized with its own skip list, by the runner, with no shared list edited; and every
``conf/policy`` option that loads weights has both declarations.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

pytest.importorskip("torch")

import vla_gym.policies  # noqa: E402
from vla_gym.build import build_policy, policy_class  # noqa: E402
from vla_gym.policy import Policy  # noqa: E402
from vla_gym.policies import tiny_checkpoints  # noqa: E402

TESTS = Path(__file__).resolve().parent
CONF = TESTS.parent / "conf"


@pytest.fixture
def fake_family(monkeypatch):
    """``tests/families`` on the policies package's path, as a new ``policies/<family>/`` would be."""
    monkeypatch.setattr(vla_gym.policies, "__path__", [*vla_gym.policies.__path__, str(TESTS / "families")])
    yield
    for name in [m for m in sys.modules if m.startswith("vla_gym.policies.fake_family")]:
        del sys.modules[name]


def test_a_family_in_the_test_tree_is_discovered_written_and_built_with_its_skip_list(fake_family, tmp_path, capsys):
    pytest.importorskip("optimum.quanto")  # int8 on CPU
    assert "fake" in tiny_checkpoints.discover()
    tiny, how = tiny_checkpoints.options()["fake_vla"]
    assert (tiny.name, how.checkpoint) == ("fake", "fake-vla")

    tiny_checkpoints.main([str(tmp_path), "--families", "fake"])  # the shared CLI, unchanged
    assert capsys.readouterr().out == f"fake-vla: {tmp_path / 'fake-vla'}\n"
    assert (tmp_path / "fake-vla" / "model.safetensors").is_file()

    policy_cfg = OmegaConf.merge(OmegaConf.load(TESTS / "conf" / "policy" / "fake_vla.yaml"),
                                 {"checkpoint": str(tmp_path / "fake-vla")})
    policy = build_policy(policy_cfg, OmegaConf.load(CONF / "quantization" / "int8.yaml"))
    assert policy.info().quantization == "int8"
    assert "QLinear" in type(policy.model.body).__name__  # quantized
    assert type(policy.model.head).__name__ == "Linear"  # kept: the family's own skip list


def test_discovery_without_the_test_tree_knows_no_fake_family():
    assert "fake" not in tiny_checkpoints.discover()


def _declares_skip_list(cls: type) -> bool:
    return any("quantization_skip" in vars(k) for k in cls.__mro__ if k is not Policy) and bool(cls.quantization_skip)


def test_every_policy_option_with_weights_declares_a_tiny_checkpoint_and_a_skip_list():
    declared = tiny_checkpoints.options()
    with_weights = set()
    for path in sorted((CONF / "policy").glob("*.yaml")):
        cls = policy_class(str(OmegaConf.load(path)["_target_"]))
        if cls.loads_weights:
            with_weights.add(path.stem)
            assert path.stem in declared, f"policy={path.stem} loads weights but no make_tiny.TINY declares it"
            assert _declares_skip_list(cls), f"{cls.__qualname__} declares no quantization_skip"
    assert set(declared) == with_weights, "a tiny checkpoint declared for a conf/policy option without weights"


def test_an_unknown_family_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        tiny_checkpoints.main([str(tmp_path), "--families", "nope"])
    assert exc.value.code == 2
