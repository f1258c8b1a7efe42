# One command per task, the same locally and in CI (.ci/run calls `make lint test matrix`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test matrix unit fuzz lint lock bench bench-nodes testbin e2e clean

# The environment comes from the hashed lock file (requirements/dev.txt: runtime and dev tools,
# every version pinned, every file's sha256 checked), then kucero itself, editable, without
# resolving anything again. reconciler/__init__.py holds the version: a bump re-installs, so the
# installed metadata (importlib.metadata, the wheel) says the new one.
$(STAMP): pyproject.toml requirements/dev.txt reconciler/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## make lock: regenerate the lock files from pyproject.toml's ranges (newest versions allowed);
## commit the result. requirements/runtime.txt is what the image installs.
LOCK := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --all-build-deps --no-emit-find-links --upgrade
lock: $(STAMP)
	$(LOCK) -o requirements/runtime.txt pyproject.toml
	$(LOCK) --extra dev -c requirements/runtime.txt -o requirements/dev.txt pyproject.toml

## make demo: build a kubeadm-like node tree with expiring certificates and renew it offline
demo: $(STAMP)
	$(BIN)/python -m reconciler.demo

## make testbin: build (or reuse) kube-apiserver, kube-controller-manager, kubeadm, etcd and
## kubectl, and the deployment tests' tools (promtool, rule checker, Flux apply, CRDs)
testbin:
	tests/controlplane/build.sh
	tests/deploy/build.sh

## make test: the whole suite, including the real control plane
test: $(STAMP) testbin
	$(BIN)/python -m pytest

## make matrix: every supported Kubernetes minor's kubeadm makes node trees (init: RSA and ECDSA,
## stacked and external etcd; join: workers), kucero renews them, and that kubeadm reads them
## back (tests/integration/test_kubeadm_matrix.py). Builds each minor's kubeadm first
## (tests/controlplane/matrix.sh, cached like testbin). Not part of `make test`.
matrix: $(STAMP)
	tests/controlplane/build.sh
	tests/controlplane/matrix.sh
	$(BIN)/python -m pytest -m matrix tests/integration/test_kubeadm_matrix.py

## make e2e: a real single-node kubeadm cluster on this machine (root; Debian packages, the
## kubelet and the images are made by tests/e2e/build.sh), kucero deployed as the README says,
## the checks of tests/e2e; the machine is left as it was found (tests/e2e/README.md)
e2e: $(STAMP)
	tests/e2e/run.sh

## make unit: only the tests that need no binaries
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

## make fuzz: the property-based tests with the long profile (tests/conftest.py), and kucero's
## own journal/state files with KUCERO_FUZZ_EXAMPLES each (tests/unit/test_own_files.py)
FUZZ_OWN_FILES := $(wildcard tests/unit/test_own_files.py)
fuzz: $(STAMP)
	KUCERO_FUZZ_EXAMPLES=25000 $(BIN)/python -m pytest tests/fuzz $(FUZZ_OWN_FILES) \
		--hypothesis-profile=long --hypothesis-show-statistics -q

lint: $(STAMP)
	$(BIN)/ruff check reconciler tests bench
	$(BIN)/ruff format --check reconciler tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.csr
	$(BIN)/python -m bench.csr --rate 30

## make bench-nodes: 20 simulated nodes on a real API server: convergence, idle requests, RSS
bench-nodes: $(STAMP) testbin
	$(BIN)/python -m bench.nodes

clean:
	rm -rf $(VENV)
