# vla_gym set-up and entry points. Everything installs into ./.venv (override with VENV=...).
# `make rollout` needs no GPU, no torch and no downloads beyond PyPI; `make test` adds the
# torch stack (torch==2.14.1 + torchvision==0.29.1 first, in one pip call) and test tools.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export LIBERO_CONFIG_PATH ?= $(CURDIR)/.libero_config
export PYTHONUNBUFFERED := 1
ARGS ?=
PYTEST_ARGS ?= -m "not slow"

.PHONY: rollout test test-all install install-dev browser docs docs-serve clean

$(VENV)/.core: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(PIP) install "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install -e ".[torch,report,remote,test,trackers,docs]"
	@# Ray launcher by name, after the rest (its cloudpickle<3 pin vs LIBERO's >=3: see pyproject.toml)
	$(PIP) install "hydra-ray-launcher>=1.2" "ray[default]>=2.9,<3"
	touch $@

install: $(VENV)/.core
install-dev: $(VENV)/.dev

## The main job on its embedded default: scripted expert on 2 LIBERO-Spatial tasks, videos + results under rollouts/
rollout: $(VENV)/.core
	$(PY) -m vla_gym.rollout $(ARGS)

## Headless Chromium for the report gallery's browser test (best effort: needs root + apt)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will be skipped"; }

## ruff (rules in pyproject.toml), then the test suite (default: everything not marked slow)
test: $(VENV)/.dev browser
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

## The documentation site (mkdocs.yml, docs/): build it as the tests do (--strict), or serve it with live reload
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --dev-addr 127.0.0.1:8001

test-all: PYTEST_ARGS=
test-all: test

clean:
	rm -rf $(VENV) .libero_config .pytest_cache site
