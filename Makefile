# chatauth — the two commands: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PG_URL ?= postgres://root@127.0.0.1:5432/test
HOST ?= 127.0.0.1
PORT ?= 8000
# Tests that run their own servers on their own databases: the PostgreSQL pass
# would only repeat them.
OWN_SERVER_TESTS := tests/test_widget_browser.py tests/test_chainlit_compat.py \
	tests/test_lifecycle_matrix.py tests/test_oidc_logout_live.py \
	tests/security/test_schemathesis.py tests/security/test_bruteforce.py \
	tests/security/test_secrets_leak.py tests/security/test_faults.py \
	tests/security/test_static.py tests/test_deploy_audit.py \
	tests/test_forwardauth_proxy.py tests/test_copilot_parity.py
# A fresh startproject per Django version: the PostgreSQL pass would repeat it
# (the Django 6 pass does not).
QUICKSTART_TESTS := tests/test_quickstart.py

# Django 6 needs Python 3.12+: the first such interpreter found (pyenv's too).
VENV6 ?= .venv-django6
PYTHON6 ?= $(shell for p in python3.13 python3.12 $(wildcard $(HOME)/.pyenv/versions/3.1[23]*/bin/python3.1[23]); do \
	$$p -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: demo test test-django6 lint format typecheck bench mutation install clean docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@echo "installing chatauth with its production and test dependencies (a few minutes)..."
	$(BIN)/python -m pip install --quiet -e ".[production,test]"
	touch $@ $(VENV)/.installed-demo

# The demo alone needs far less than the test toolchain.
$(VENV)/.installed-demo: $(BIN)/python pyproject.toml
	@echo "installing chatauth and what the demo needs..."
	$(BIN)/python -m pip install --quiet -e ".[demo]"
	touch $@

install: $(VENV)/.installed

## demo: set up and run the demo on http://$(HOST):$(PORT)/ (SQLite, in-memory layer)
demo: $(VENV)/.installed-demo
	DJANGO_DEBUG=1 $(BIN)/python manage.py migrate --noinput -v0
	DJANGO_DEBUG=1 $(BIN)/python manage.py demo_user --host $(HOST) --port $(PORT)
	DJANGO_DEBUG=1 $(BIN)/python manage.py runserver $(HOST):$(PORT)

## test: lint and static checks, the docs, then the whole suite on SQLite and on PostgreSQL
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -c pyproject.toml -r chatauth
	$(BIN)/mypy
	$(MAKE) --no-print-directory docs
	$(BIN)/python -m tests.security.audit_dependencies
	$(BIN)/python -m pytest
	@if [ "$$CHATAUTH_REQUIRE_SERVICES" = "1" ] || pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
		echo "== the suite again on PostgreSQL =="; \
		DATABASE_URL=$(PG_URL) $(BIN)/python -m pytest $(addprefix --ignore=,$(OWN_SERVER_TESTS) $(QUICKSTART_TESTS)); \
	else echo "PostgreSQL not reachable: skipped the PostgreSQL run"; fi
	$(MAKE) --no-print-directory test-django6

$(VENV6)/.installed: pyproject.toml
	$(PYTHON6) -m venv $(VENV6)
	$(VENV6)/bin/python -m pip install --quiet --upgrade pip
	$(VENV6)/bin/python -m pip install --quiet -e ".[production,test]" "Django>=6.1,<7"
	touch $@

## test-django6: the suite (SQLite; not the suites that start their own servers) on Django 6.x
test-django6:
	@if [ -z "$(PYTHON6)" ]; then \
		if [ "$$CHATAUTH_REQUIRE_SERVICES" = "1" ]; then echo "no Python 3.12+ for Django 6"; exit 1; fi; \
		echo "no Python 3.12+: skipped the Django 6 run"; exit 0; fi; \
	$(MAKE) --no-print-directory $(VENV6)/.installed && \
	echo "== the suite again on Django $$($(VENV6)/bin/python -m django --version) ($$($(VENV6)/bin/python --version)) ==" && \
	$(VENV6)/bin/python -m pytest $(addprefix --ignore=,$(OWN_SERVER_TESTS))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## typecheck: strict mypy on chatauth/ (django-stubs, djangorestframework-stubs; [tool.mypy])
typecheck: install
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The docs need the package (its settings and schema render the reference
# tables), the demo settings' one extra, and Sphinx: not the test toolchain.
$(VENV)/.installed-docs: $(BIN)/python pyproject.toml
	@echo "installing chatauth and what the docs need..."
	$(BIN)/python -m pip install --quiet -e ".[demo,docs]"
	touch $@

## docs: the docs site (docs/*.md) in docs/_build/html/, warnings as errors
docs: $(VENV)/.installed-docs
	$(BIN)/sphinx-build -W --keep-going -n -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

## bench: every benchmark in bench/, each against its baseline
bench: install
	$(BIN)/python -m bench

## mutation: mutation testing of the security core, a score per module (README)
mutation: install
	nice $(BIN)/python -m tools.mutation $(MODULES)

clean:
	rm -rf $(VENV) $(VENV6) db.sqlite3 .pytest_cache .ruff_cache docs/_build mutants
