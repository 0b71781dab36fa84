# Two commands for a fresh machine:
#   make start   create .venv, install Bastion and start an all-in-one cluster (SQLite)
#   make test    install everything the tests need (system packages too, as root), then
#                ruff, mypy, the layer contract (import-linter), the cycle check and pytest
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ./bastion-data
# e.g. make start START_ARGS="--auth-addr 127.0.0.1:13025 --proxy-addr 127.0.0.1:13080"
START_ARGS ?=
SYSTEM_PACKAGES := openssh-client openssh-server openssh-sftp-server postgresql pgbouncer mariadb-server mariadb-client libmariadb-dev openssl tmux rsyslog rsyslog-openssl rsyslog-gnutls xmlsec1 chromium asciinema nodejs haproxy swtpm swtpm-tools tpm2-tools libtss2-dev wrk nginx-light gcc libssl-dev

.PHONY: start test install install-dev web-assets system-deps lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

# The web UI's browser libraries (xterm.js) from npm with the lockfile; served from node_modules
# there, never committed (docs/web-ui.md).
WEB_ASSETS := src/bastion/web/assets
$(WEB_ASSETS)/node_modules/.package-lock.json: $(WEB_ASSETS)/package.json $(WEB_ASSETS)/package-lock.json
	cd $(WEB_ASSETS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

web-assets: $(WEB_ASSETS)/node_modules/.package-lock.json

install: $(VENV)/.installed web-assets
install-dev: $(VENV)/.installed-dev web-assets

start: $(VENV)/.installed web-assets
	$(BIN)/bastion start --data-dir $(DATA) $(START_ARGS)

# Installs the real peers the tests drive (OpenSSH, PostgreSQL, openssl, tmux, xmlsec1 and
# Chromium for SSO/WebAuthn, Node.js for the OpenID provider, gcc and libssl-dev for the
# bench's C floor, bench/tls_floor.c) when run as
# root and one is missing; as a normal user it only reports what is missing.
system-deps:
	@missing=""; \
	for bin in ssh sshd ssh-keygen openssl tmux xmlsec1 chromium asciinema node npm haproxy swtpm tpm2_getcap psql pgbench pgbouncer mariadb mariadb-install-db mariadbd mariadb-slap wrk nginx; do \
	  command -v $$bin >/dev/null 2>&1 || [ -x /usr/sbin/$$bin ] || missing="$$missing $$bin"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing initdb"; \
	command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || missing="$$missing rsyslogd"; \
	[ -x /usr/lib/openssh/sftp-server ] || missing="$$missing sftp-server"; \
	ls /usr/include/tss2/tss2_esys.h >/dev/null 2>&1 || missing="$$missing libtss2-dev"; \
	command -v cc >/dev/null 2>&1 && [ -f /usr/include/openssl/ssl.h ] || missing="$$missing gcc/libssl-dev"; \
	command -v mariadb_config >/dev/null 2>&1 || missing="$$missing libmariadb-dev"; \
	ls /usr/lib/*/rsyslog/lmnsd_ossl.so /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || missing="$$missing rsyslog-tls-drivers"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing system packages (missing:$$missing)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else \
	    echo "missing:$$missing (run make test as root, or install: $(SYSTEM_PACKAGES))"; \
	  fi; \
	fi

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# --dist loadscope: whole modules (or classes) go to a worker, biggest first. The default "load"
# hands each worker one contiguous eighth of the collection first, which put every
# tests/integration test on one worker while the other ran tests/unit and then sat idle; per
# module, a module-scoped fixture (cluster, nodes, browser) also starts once, not per worker.
test: system-deps $(VENV)/.installed-dev web-assets lint typecheck
	$(BIN)/python tests/check_layout.py
	$(BIN)/lint-imports
	$(BIN)/python tests/check_cycles.py
	$(BIN)/pytest -n 2 --dist loadscope -q -p no:cacheprovider --durations=40

unit: $(VENV)/.installed-dev
	$(BIN)/pytest -q tests/unit

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/issuance.py
	$(BIN)/python bench/rbac.py
	$(BIN)/python bench/mfa.py
	$(BIN)/python bench/audit/run.py
	$(BIN)/python bench/audit_bulk.py
	$(BIN)/python bench/recording.py
	$(BIN)/python bench/export/run.py
	$(BIN)/python bench/agent_events.py
	$(BIN)/python bench/gate.py
	$(BIN)/python bench/changes.py
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/ha.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
