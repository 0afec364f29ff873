# Every target installs what it needs first: a fresh clone needs only Python 3.11, Go and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TESTBED = PYTHONPATH=hack $(BIN)/python -m testbed

.PHONY: setup testbed-build image up down crds reasons lint unit test-local test demo demo-down

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
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
test: testbed-build lint $(NODE_DEPS) image
	$(TESTBED) run -- $(BIN)/pytest

# The whole chain on this machine (root: it uses the network namespace mta-demo); see hack/demo.py.
demo: testbed-build
	$(BIN)/python hack/demo.py up

demo-down: setup
	$(BIN)/python hack/demo.py down
