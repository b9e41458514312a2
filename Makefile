# Entry points for developers and CI.  `make test` is what CI runs (via .ci/run).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Reinstall only when the pins change.
STAMP := $(VENV)/.installed-requirements
APT_PACKAGES := $(strip $(shell sed 's/\#.*//' scripts/apt-packages.txt))
PYTEST_ARGS ?=

.PHONY: venv system run test check diagram clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt -c constraints.txt
	touch $@

# Debian packages: installed when we are root, otherwise only reported (the tests that need
# them will then fail and say why).
system:
	@missing=$$(for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else \
	  echo "Missing Debian packages (run 'make system' as root):" $$missing; \
	fi

run: venv system
	scripts/run.sh

# The whole suite on PostgreSQL (pytest-django creates and drops test_<name> itself).
# Values already set (non-empty) in the environment win.  Exit code 5 (nothing collected) fails too.
test: venv system
	scripts/services.sh
	DATABASE_URL="$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/portal}" \
	REDIS_URL="$${REDIS_URL:-redis://127.0.0.1:6379/15}" \
	$(PY) -m pytest $(PYTEST_ARGS) || { rc=$$?; \
	  [ $$rc = 5 ] && echo "pytest collected no tests: treating that as a failure"; exit $$rc; }

# The production profile must pass the deploy checks, warnings included.  The key and host
# are throwaway values: they exist only so the profile agrees to load.
check: venv
	$(PY) manage.py check
	DJANGO_PROFILE=production DJANGO_ALLOWED_HOSTS=portal.example.invalid \
	DJANGO_SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	$(PY) manage.py check --deploy --fail-level WARNING

diagram: venv
	$(PY) manage.py state_diagram

clean:
	rm -rf var/
