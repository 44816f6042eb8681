# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv and install flashtx into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo dev test test-fast serve bench lint protos clean

# uv installs from its cache in seconds (pip: about a minute for Ray and the rest), with
# bytecode compiled once here (else every Ray worker compiles its imports: twice the CPU).
# The client package (clients/python: flashtx-client, which flashtx depends on) comes
# from this checkout too.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==0.13.8
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python \
		-e ./clients/python -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/flashtx demo

serve: $(STAMP)
	$(BIN)/flashtx serve

# Serves on this machine with a merchant, SKUs and keys printed; Ctrl-C stops it.
dev: $(STAMP)
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/flashtx dev

# The suite's lanes side by side (scripts/test_lanes.py); `pytest` alone runs them in turn.
test: $(STAMP)
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python scripts/test_lanes.py

# Unit tests and the quick integration tests (no `slow` mark): the development loop.
test-fast: $(STAMP)
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q -m "not slow" --durations=10

bench: $(STAMP)
	$(BIN)/flashtx bench --scenario flash-sale --duration 20 --json out.json --plot out.png

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python scripts/typecheck.py
	$(BIN)/hadolint Dockerfile
	$(BIN)/yamllint --strict cluster/ docker-compose.yml .yamllint.yaml

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .pytest_cache
