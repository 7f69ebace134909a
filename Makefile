# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
IMAGE ?= wa-exporter
BASE_IMAGE ?= wa-exporter-base:bookworm
EXTRAS ?=
DOCKER_BUILD_FLAGS ?=

.PHONY: demo test test-fast lint bench soak venv services image clean

venv: $(VENV)/.installed

# The development tools (tests, linters) include everything the demo needs.
$(VENV)/.installed: pyproject.toml
	@scripts/ensure-python.sh "$(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-demo

# The demo alone needs only the exporter and the demo's world, not mypy, ruff or hypothesis.
$(VENV)/.installed-demo: pyproject.toml
	@scripts/ensure-python.sh "$(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[demo]'
	@touch $@

## demo: run the exporter on an embedded world (SQLite messages table, simulated WA API),
## fresh each run; Ctrl-C, SIGTERM or SIGHUP stops it and everything it started
demo: $(VENV)/.installed-demo
	$(PY) -m demo

## image: the exporter's image, tagged $(IMAGE):<version> and $(IMAGE):latest, built with no image
## registry: a Debian base made here with debootstrap (as root, the first time only; kept while
## scripts/build-base-image.sh is unchanged) and wheels from the package index. EXTRAS=rsa,ssh
## for the optional extras; details in scripts/build-image.sh
image: $(VENV)/bin/python
	IMAGE='$(IMAGE)' BASE_IMAGE='$(BASE_IMAGE)' EXTRAS='$(EXTRAS)' PYTHON='$(PY)' \
	DOCKER_BUILD_FLAGS='$(DOCKER_BUILD_FLAGS)' scripts/build-image.sh

# A bare venv is enough for the image: its pip downloads the wheels.
$(VENV)/bin/python:
	@scripts/ensure-python.sh "$(PYTHON)"
	$(PYTHON) -m venv $(VENV)

## services: start the local services the tests use (Docker engine), where possible
services:
	@scripts/ensure-services.sh

## test: the whole suite; in CI (CI=true) a missing service fails instead of skipping
test: venv services
	$(PY) -m pytest $(PYTEST_ARGS)

## test-fast: the hermetic unit tests alone (tests/unit), in seconds, with no services: the
## database and Docker addresses point at a closed port, so a test that needs one cannot pass
## here. UPDATE_FIXTURES=1 make test-fast rewrites the collectors' exposition fixtures
## (tests/unit/fixtures); review their diff before committing it
test-fast: venv
	WAX_TEST_MYSQL_URL=mysql+pymysql://root@127.0.0.1:1/ \
	WAX_TEST_PG_URL=postgresql+psycopg2://postgres@127.0.0.1:1/postgres \
	DOCKER_HOST=tcp://127.0.0.1:1 $(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## bench: speed and memory figures, each against a reference measured in the same run
bench: venv services
	@command -v ab >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq apache2-utils >/dev/null; } || echo "bench: install apache2-utils for the webhook benchmark" >&2
	$(PY) -m bench

## soak: the real exporter for 10 minutes in a changing world; memory, fds and threads must stay flat
## (SOAK_SECONDS=120 make soak for a shorter run; figures in docs/soak.md)
soak: venv services
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) .demo build dist wheels *.egg-info
