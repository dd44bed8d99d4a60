# lonewatch — the two commands a new user needs: `make demo` and `make test`.
# Both set up everything first: a virtualenv in .venv, the package, and the Mosquitto and
# Redis server binaries (installed with apt-get when run as root, otherwise the exact line).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The suite mostly waits (servers, real finger timings): more workers than cores pays off.
TEST_WORKERS ?= 6

.PHONY: setup servers demo test bench clean

setup: servers $(STAMP)

servers:
	@missing=""; \
	for b in mosquitto mosquitto_passwd redis-server redis-sentinel mcopy; do \
	  command -v $$b >/dev/null 2>&1 || [ -x /usr/sbin/$$b ] || missing="$$missing $$b"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto, redis-server, redis-sentinel and mtools (missing:$$missing)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto redis-server redis-sentinel mtools || exit 1; \
	  else \
	    echo "missing:$$missing — install with: sudo apt-get install -y mosquitto redis-server redis-sentinel mtools"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lonewatch needs Python >= 3.11")'
	@$(PYTHON) -m venv $(VENV) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv && $(PYTHON) -m venv --clear $(VENV); \
	  else echo "python venv missing — install with: sudo apt-get install -y python3-venv"; exit 1; fi; }
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

demo: setup
	$(BIN)/lonewatch demo

test: setup
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
