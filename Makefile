# The two front-door commands: `make demo` and `make test`. Each sets up .venv from the repo's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint bench install install-dev browser loadgen clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when pyproject.toml changes (the stamp is newer otherwise).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The dev install includes the spark extra: the Spark tests (marked spark) run in CI on local[2].
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The main job on embedded defaults, as four real commands: data (once), a first champion (once),
# scores for the serving store, then the API with a fresh demo key. Retrain: $(BIN)/churnguard train --data $(DEMO_DATA)
DEMO_DATA ?= data/demo
DEMO_CUSTOMERS ?= 10000
DEMO_PORT ?= 8000
demo: install
	$(BIN)/churnguard generate --out $(DEMO_DATA) --customers $(DEMO_CUSTOMERS) --seed 42 --referrals --if-missing
	$(BIN)/churnguard train --data $(DEMO_DATA) --if-no-champion
	$(BIN)/churnguard score --data $(DEMO_DATA) --out models/demo_scores.csv
	$(BIN)/churnguard serve --demo --port $(DEMO_PORT)

# Headless Chromium for the dashboard tests (Debian's package; Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: install Debian's chromium package (the browser tests need it)"; fi; }

# wrk, the API benchmark's load generator (Debian's package); without it a slower Python generator is used.
loadgen:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "wrk is missing: install Debian's wrk package for the API benchmark's figures"; fi; }

lint: install-dev
	$(BIN)/ruff check features training serving tests benchmarks
	$(BIN)/ruff format --check features training serving
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install-dev browser lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest $(PYTEST_ARGS)

bench: install-dev loadgen
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
