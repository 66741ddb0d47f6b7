# Two commands matter (see README): `make demo` and `make test`.
# Each creates .venv with what it needs on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test serve sandbox bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamps record what was installed, so edits to setup.cfg reinstall.
$(VENV)/.installed-run: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

demo: $(VENV)/.installed-run  ## the sandbox Discord + MemberSense, wired together
	$(BIN)/membersense demo

test: $(VENV)/.installed-test  ## static checks, then the whole test suite
	$(BIN)/ruff check .
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
