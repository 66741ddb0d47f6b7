# Two commands matter (see README): `make demo` and `make test`.
# Each creates .venv with what it needs on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test serve sandbox bench clean system-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamps record what was installed, so edits to setup.cfg reinstall.
$(VENV)/.installed-run: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# System packages before the test extra: pip builds mod_wsgi against apache2-dev's apxs.
$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python system-packages
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

# `make demo PORT=9000 SANDBOX_PORT=9001` (or the same variables in the environment):
# the demo reads PORT and SANDBOX_PORT from its environment.
demo: $(VENV)/.installed-run  ## the sandbox Discord + MemberSense, wired together
	$(BIN)/membersense demo

# The script is safe to rerun (it fetches nothing when all is there) and says why when it
# does not install (not root, not CI).
system-packages:  ## the Debian packages the tests need (Chromium, nginx, Apache, a C compiler)
	scripts/install-system-packages

test: system-packages $(VENV)/.installed-test  ## static checks, then the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

serve: $(VENV)/.installed-run  ## MemberSense under gunicorn, configured from the environment / .env
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

sandbox: $(VENV)/.installed-run  ## the sandbox Discord alone
	$(BIN)/membersense sandbox

bench: $(VENV)/.installed-test  ## every benchmark (see BENCHMARKS.md)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
