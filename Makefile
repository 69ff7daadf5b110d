# Two commands for a newcomer: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
# The demo's subset of Fashion-MNIST; DEMO_LIMIT= (empty) runs the full 60,000 + 10,000.
DEMO_LIMIT ?= train=5000,test=1000
DEMO_OUT ?= demo_output

.PHONY: demo test test-fast lint install data clean parity flink-up flink-down demo-flink test-flink

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

data: $(FASHION_MNIST)/train-images-idx3-ubyte.gz

$(FASHION_MNIST)/train-images-idx3-ubyte.gz:
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist

demo: install data
	rm -rf $(DEMO_OUT)
	@start=$$(date +%s); \
	$(BIN)/tv-extract --source=idx:$(FASHION_MNIST) --output=$(DEMO_OUT)/transfer_values \
	  --label_names=examples/fashion_mnist_labels.txt $(if $(DEMO_LIMIT),--limit=$(DEMO_LIMIT)) && \
	$(BIN)/tv-train --data=$(DEMO_OUT)/transfer_values --model_dir=$(DEMO_OUT)/model && \
	$(BIN)/python examples/fashion_mnist_samples.py $(FASHION_MNIST) $(DEMO_OUT)/samples && \
	$(BIN)/tv-predict --model=$(DEMO_OUT)/model --top_k=3 $(DEMO_OUT)/samples/*.png && \
	echo "demo finished in $$(( $$(date +%s) - start )) s; outputs in $(DEMO_OUT)/"

# One worker per core (at most 4: each holds TensorFlow, 1–2 GB); each test file stays on one
# worker, the Flink tests on one (tests/conftest.py).
PYTEST_PARALLEL ?= -n auto --maxprocesses=4 --dist loadgroup

test: install
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) tests

# The inner loop: everything but the tests marked slow (tests/conftest.py).
test-fast: install
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not slow" tests

# The live backbone parity check against PyTorch itself. Installs the `parity` extra: PyPI's torch
# is a CUDA build of several GB, so `make test` checks against committed reference outputs instead
# (regenerate them with tests/reference/make_efficientnet_reference.py).
parity: install
	$(BIN)/pip install --quiet -e '.[parity]'
	TV_PARITY=1 $(BIN)/python -m pytest -q tests/parity tests/beam_jobs/backbones/test_efficientnet_port.py

# A local Flink session cluster (docs/runners.md, "Flink"): JobManager REST on localhost:8081,
# two TaskManagers, Beam's job server on localhost:8099, SDK worker pool on localhost:50000.
# Installed into .flink/ on first use (Flink from PyPI, the job server from Maven Central);
# logs in .flink/log/. `--config=examples/flink.yaml` sends any of our Beam jobs there.
FLINK := $(BIN)/python -m beam_jobs.runners.flink

flink-up: install
	$(FLINK) up

flink-down:
	@if [ -x $(BIN)/python ]; then $(FLINK) down; fi

# The Flink tests of `make test` plus the long ones (chunked, incremental, augmented views, a
# TaskManager killed mid-job): several Flink jobs, about ten minutes on two cores.
test-flink: install
	TV_FLINK_LONG=1 $(BIN)/python -m pytest -q -s tests/beam_jobs/runners/flink

# `make demo` with its extraction on the local Flink cluster: up, extract, train, predict, down.
demo-flink: install data
	rm -rf $(DEMO_OUT)
	$(FLINK) up
	@start=$$(date +%s); status=0; \
	$(BIN)/tv-extract --config=examples/flink.yaml --source=idx:$(FASHION_MNIST) \
	  --output=$(DEMO_OUT)/transfer_values --label_names=examples/fashion_mnist_labels.txt \
	  $(if $(DEMO_LIMIT),--limit=$(DEMO_LIMIT)) && \
	$(FLINK) status && \
	$(BIN)/tv-train --data=$(DEMO_OUT)/transfer_values --model_dir=$(DEMO_OUT)/model && \
	$(BIN)/python examples/fashion_mnist_samples.py $(FASHION_MNIST) $(DEMO_OUT)/samples && \
	$(BIN)/tv-predict --model=$(DEMO_OUT)/model --top_k=3 $(DEMO_OUT)/samples/*.png || status=$$?; \
	$(FLINK) down; \
	[ $$status = 0 ] && echo "demo-flink finished in $$(( $$(date +%s) - start )) s; outputs in $(DEMO_OUT)/"; \
	exit $$status

# Code health (ruff.toml, mypy.ini) and the layout's import rules (.importlinter); .ci/run
# calls it after the tests.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
