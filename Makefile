# The two commands: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# A throwaway PostgreSQL database for the second pass of the suite under CI=true.
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/imagecredits

.PHONY: run test test-sqlite test-postgres lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Where `make run` listens: `make run PORT=8001` when 8000 is taken (HOST=0.0.0.0 to reach it from elsewhere).
HOST ?= 127.0.0.1
PORT ?= 8000

# Serves the storefront on http://$(HOST):$(PORT) (and the bot when DISCORD_TOKEN is set).
# DEBUG defaults to on here so that, with no Stripe/OpenAI keys, the labelled test-mode backends are used.
# An empty sample gallery gets placeholder images (real ones are uploaded in the admin).
run: install
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py seedgallery --if-empty
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py rundev $(HOST):$(PORT)

# The whole suite on SQLite; under CI=true, a second pass on PostgreSQL (which must then be reachable).
test: install
	$(BIN)/python -m pytest
	@if [ "$$CI" = "true" ]; then $(MAKE) --no-print-directory test-postgres; fi

test-postgres: install
	DATABASE_URL=$(PG_TEST_URL) $(BIN)/python -m pytest -p no:cacheprovider

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV)
