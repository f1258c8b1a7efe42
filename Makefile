# One command per task, the same locally and in CI (.ci/run calls `make lint test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit lint bench bench-nodes testbin clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## make demo: build a kubeadm-like node tree with expiring certificates and renew it offline
demo: $(STAMP)
	$(BIN)/python -m reconciler.demo

## make testbin: build (or reuse) kube-apiserver, kube-controller-manager, kubeadm and etcd
testbin:
	tests/controlplane/build.sh

## make test: the whole suite, including the real control plane
test: $(STAMP) testbin
	$(BIN)/python -m pytest

## make unit: only the tests that need no binaries
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check reconciler tests bench
	$(BIN)/ruff format --check reconciler tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m bench

## make bench-nodes: 20 simulated nodes on a real API server: convergence, idle requests, RSS
bench-nodes: $(STAMP) testbin
	$(BIN)/python -m bench.nodes

clean:
	rm -rf $(VENV)
