# lonewatch — the two commands a new user needs: `make demo` and `make test`.
# Both set up everything first: a virtualenv in .venv, the package, and the Mosquitto and
# Redis server binaries and Debian's chromium for the console's browser tests (installed with
# apt-get when run as root, otherwise the exact line; no browser is ever downloaded otherwise).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The suite mostly waits (servers, real finger timings): more workers than cores pays off.
TEST_WORKERS ?= 8

.PHONY: setup servers demo test bench clean catalogs

setup: servers $(STAMP)

servers:
	@missing=""; \
	for b in mosquitto mosquitto_passwd redis-server redis-sentinel mcopy pdftoppm chromium; do \
	  command -v $$b >/dev/null 2>&1 || [ -x /usr/sbin/$$b ] || missing="$$missing $$b"; \
	done; \
	[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf ] || missing="$$missing DejaVuSans"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto, redis-server, redis-sentinel, mtools, poppler-utils, fonts-dejavu-core, chromium (missing:$$missing)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto redis-server redis-sentinel mtools poppler-utils fonts-dejavu-core chromium || exit 1; \
	  else \
	    echo "missing:$$missing — install with: sudo apt-get install -y mosquitto redis-server redis-sentinel mtools poppler-utils fonts-dejavu-core chromium"; exit 1; \
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
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal

bench: setup
	$(BIN)/python -m bench

# Texts for people (i18n/, issue 13): extract each domain's messages with Babel, merge them into
# every language's catalog and compile the .mo files (committed: the Pi has no Babel). Re-running
# it without text changes changes no file.
CATALOG_SOURCES_notify := relay/notify/templates.py
CATALOG_SOURCES_device := device/smstext.py
CATALOG_SOURCES_card   := relay/card_items.py
catalogs: SHELL := /bin/bash
catalogs: setup
	@for d in notify device card; do \
	  case $$d in notify) src="$(CATALOG_SOURCES_notify)";; device) src="$(CATALOG_SOURCES_device)";; card) src="$(CATALOG_SOURCES_card)";; esac; \
	  $(BIN)/pybabel --quiet extract -F babel.cfg -c TRANSLATORS: --no-location --sort-output --project=lonewatch \
	    --no-wrap -o i18n/locale/$$d.pot.new $$src || exit 1; \
	  if cmp -s <(grep -v POT-Creation-Date i18n/locale/$$d.pot.new) <(grep -v POT-Creation-Date i18n/locale/$$d.pot 2>/dev/null); \
	  then rm i18n/locale/$$d.pot.new; else mv i18n/locale/$$d.pot.new i18n/locale/$$d.pot; fi; \
	  $(BIN)/pybabel --quiet update -i i18n/locale/$$d.pot -d i18n/locale -D $$d --no-fuzzy-matching --ignore-obsolete --no-wrap || exit 1; \
	  $(BIN)/pybabel compile -d i18n/locale -D $$d --statistics || exit 1; \
	done
	@# the console's texts (issue 13): templates through Jinja2's i18n extension, labels marked N_
	$(BIN)/pybabel --quiet extract -F console/babel.cfg -k N_ --no-location --sort-output --project=lonewatch --no-wrap \
	  -o i18n/locale/console.pot .
	$(BIN)/pybabel --quiet update -i i18n/locale/console.pot -d i18n/locale -D console --no-fuzzy-matching --ignore-obsolete --no-wrap
	$(BIN)/pybabel compile -d i18n/locale -D console --statistics

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
