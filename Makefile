# Every target installs what it needs first: a fresh clone needs only Python 3.11, Go and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TESTBED = PYTHONPATH=hack $(BIN)/python -m testbed
LOCK   := requirements/runtime.txt

.PHONY: setup testbed-build image lock up down crds reasons lint unit test-local test demo demo-down

# The runtime dependencies at the versions the image ships (requirements/runtime.txt), so the tests run
# what the pods run; its hashes are the image's business (pip refuses hashes beside an editable install).
$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	sed -e 's/ *\\$$//' -e '/--hash=/d' $(LOCK) > $(VENV)/constraints.txt
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e '.[test]'
	touch $@

setup: $(BIN)/.installed

testbed-build: setup
	$(TESTBED) build

# The image without Docker (root; mmdebstrap, umoci, skopeo): build/image/mta-operator-<version>.oci.tar,
# for `ctr import`, `docker load` or `kind load image-archive`. Cached by its inputs (hack/image/build.py).
image: setup
	PYTHONPATH=hack $(BIN)/python -m image build --out build/image

up: testbed-build
	$(TESTBED) up

down: setup
	$(TESTBED) down

# The runtime dependencies pinned with their hashes, resolved from pyproject.toml by pip-tools (in a venv
# of its own: it follows pip's internals, so it is pinned apart from the project's pip). Run after changing
# [project].dependencies; a unit test refuses a lock that no longer satisfies them.
PIP_TOOLS := build/pip-tools
lock:
	test -x $(PIP_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(PIP_TOOLS) && \
		$(PIP_TOOLS)/bin/pip install -q 'pip==25.2' 'pip-tools==7.6.2'; }
	$(PIP_TOOLS)/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links --output-file=$(LOCK) pyproject.toml

# The CRDs in crds/ are generated from the pydantic models (one source of truth).
# The chart carries its own copy (Argo CD and `helm package` refuse files outside the chart).
crds: setup
	$(BIN)/python -m mta_operator.api.crdgen
	cp crds/*.yaml helm/mta-operator/files/crds/

# The Argo CD health check's terminal reasons and the reason tables in the docs come from the operator's
# reason registry (operator/mta_operator/api/reasons.py).
reasons: setup
	$(BIN)/python -m mta_operator.api.healthgen

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m mta_operator.api.crdgen --check
	$(BIN)/python -m mta_operator.api.healthgen --check

# Nodemailer for tests/clients, from the npm registry, before the suite enters its network namespace
# (no registry there); again only when the lock file changes.
NODE_DEPS := tests/clients/node/node_modules/.installed
$(NODE_DEPS): tests/clients/node/package-lock.json
	npm ci --prefix tests/clients/node --no-audit --no-fund
	touch $@

# The tier that needs nothing but Python: seconds, no root, no test bed, no server processes (the tests
# marked unit; tests/conftest.py refuses a unit test that also needs the test bed, root, Postfix, swaks
# or Node.js).
unit: setup
	$(BIN)/pytest -q -m unit

# Every test that needs neither the test bed nor root, Postfix, swaks or Node: real relays and receivers on
# loopback, no Kubernetes (minutes, not seconds).
test-local: setup
	$(BIN)/pytest -q -m "not testbed and not root and not postfix and not swaks and not node"

# The suite runs in its own network namespace (the test host), where pod IPs are local addresses; the image
# is built before it enters (mmdebstrap and pip need the registries), and its tests find it in the cache.
# Two pytest processes at once: the test bed's tests, and beside them every other (hack/suite.py).
# The set-up steps run side by side (the test bed's Go builds use the CPU, the image's mostly the network
# and the disk); each step's output is printed together when it ends.
test: setup
	$(MAKE) --no-print-directory -j4 --output-sync=target testbed-build lint $(NODE_DEPS) image
	$(TESTBED) run -- $(BIN)/python hack/suite.py

# The whole chain on this machine (root: it uses the network namespace mta-demo); see hack/demo.py.
demo: testbed-build
	$(BIN)/python hack/demo.py up

demo-down: setup
	$(BIN)/python hack/demo.py down
