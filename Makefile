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
	tests/test_lifecycle_matrix.py \
	tests/security/test_schemathesis.py tests/security/test_bruteforce.py \
	tests/security/test_secrets_leak.py tests/security/test_faults.py \
	tests/security/test_static.py tests/test_deploy_audit.py

.PHONY: demo test lint format bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[production,test]"
	touch $@

install: $(VENV)/.installed

## demo: set up and run the demo on http://$(HOST):$(PORT)/ (SQLite, in-memory layer)
demo: install
	DJANGO_DEBUG=1 $(BIN)/python manage.py migrate --noinput -v0
	DJANGO_DEBUG=1 $(BIN)/python manage.py demo_user --host $(HOST) --port $(PORT)
	DJANGO_DEBUG=1 $(BIN)/python manage.py runserver $(HOST):$(PORT)

## test: lint and static checks, then the whole suite on SQLite and on PostgreSQL
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -c pyproject.toml -r chatauth
	$(BIN)/python -m tests.security.audit_dependencies
	$(BIN)/python -m pytest
	@if [ "$$CHATAUTH_REQUIRE_SERVICES" = "1" ] || pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
		echo "== the suite again on PostgreSQL =="; \
		DATABASE_URL=$(PG_URL) $(BIN)/python -m pytest $(addprefix --ignore=,$(OWN_SERVER_TESTS)); \
	else echo "PostgreSQL not reachable: skipped the PostgreSQL run"; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: every benchmark in bench/, each against its baseline
bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) db.sqlite3 .pytest_cache .ruff_cache
