# The two commands a newcomer needs:
#   make serve   start the broker on its embedded default (SQLite, generated keys) at 127.0.0.1:8787
#   make test    run the whole test suite (SQLite and PostgreSQL)
# Both install what they need into .venv first (Python >= 3.11, Node >= 20 for the test peers).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PEERS  := tests/peers/oidc_provider
TS_SDK := tests/peers/vercel_connect_ts

.PHONY: serve test setup peers lint typecheck bench demo-oauth clean

# Development settings: providers and issuers on this machine (make demo-oauth) are reachable.
# `valetkey serve` without --allow-private-networks refuses private and loopback addresses.
serve: setup
	$(BIN)/valetkey serve --allow-private-networks $(ARGS)

test: setup peers
	$(BIN)/pytest $(PYTEST_ARGS)

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Valetkey needs Python >= 3.11")'
	@echo "==> [1/3] creating the virtualenv $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] upgrading pip"
	$(BIN)/python -m pip install --upgrade --progress-bar on pip
	@echo "==> [3/3] installing Valetkey and its dependencies (about a minute on first run)"
	$(BIN)/python -m pip install --progress-bar on -e '.[server,dev]'
	@echo "==> installed; next time this step is skipped"
	touch $@

peers: $(PEERS)/node_modules/.installed $(TS_SDK)/node_modules/.installed

$(PEERS)/node_modules/.installed: $(PEERS)/package.json $(PEERS)/package-lock.json
	npm ci --prefix $(PEERS) --no-audit --no-fund --loglevel=error
	touch $@

# The official TypeScript SDK (@vercel/connect), driven against the broker by the tests.
$(TS_SDK)/node_modules/.installed: $(TS_SDK)/package.json $(TS_SDK)/package-lock.json
	npm ci --prefix $(TS_SDK) --no-audit --no-fund --loglevel=error
	touch $@

lint: setup
	$(BIN)/ruff check src tests bench

typecheck: setup
	$(BIN)/mypy src

# A local OAuth/OIDC server (the tests' oidc-provider) for the README walkthroughs, on 127.0.0.1:9400.
# It registers the callback of the broker the CLI finds; DEMO_ARGS="--broker-url URL" names another.
demo-oauth: setup peers
	$(BIN)/python scripts/demo_oauth_server.py $(DEMO_ARGS)

bench: setup peers
	$(BIN)/python bench/bench_exchange.py
	$(BIN)/python bench/bench_sdk_cache.py

clean:
	rm -rf $(VENV) $(PEERS)/node_modules $(TS_SDK)/node_modules .pytest_cache .mypy_cache .ruff_cache
