# The two commands of the README: `make run` and `make test`. Both work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= config.toml
APT_PACKAGES := dovecot-imapd dovecot-core swaks chromium
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test install system-packages lint format bench screenshots clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make run: install, initialise a SQLite database with a demo agent if there is none, start everything
run: $(STAMP)
	@if [ ! -f var/mailgateway.db ]; then $(BIN)/mailgateway --config $(CONFIG) init --demo; \
	  else $(BIN)/mailgateway --config $(CONFIG) init >/dev/null; \
	  echo "existing database kept; reset a login with: $(BIN)/mailgateway agent set-password admin@example.com"; fi
	@$(BIN)/mailgateway --config $(CONFIG) check-config | grep -E '^(web|smtp listener):'
	exec $(BIN)/mailgateway --config $(CONFIG) run

## Debian packages the tests use (real Dovecot, swaks, Chromium); installed only when missing
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq $$missing >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $$missing; }; fi

## make test: everything the tests need, then the whole suite on both cores
test: $(STAMP) system-packages
	$(BIN)/ruff check mailgateway webui models tests bench
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check mailgateway webui models tests bench

format: $(STAMP)
	$(BIN)/ruff format mailgateway webui models tests bench

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/inbox.py

## make screenshots: refresh docs/screenshots/*.png (inbox, ticket, composer) from the browser tests
screenshots: $(STAMP) system-packages
	MAILGATEWAY_SCREENSHOTS=1 $(BIN)/python -m pytest -q -p no:xdist \
	  tests/webui/test_browser.py tests/webui/test_flow.py -k "sqlite and (keyboard or smtp)"

clean:
	rm -rf $(VENV) var
