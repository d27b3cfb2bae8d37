# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Two stamps: `make run` installs Sonify and what it runs on; `make test` adds the test tools.
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed
# The oldest Python Sonify runs on, read from pyproject.toml's requires-python (">=3.11").
NEED_PYTHON := $(shell sed -n 's/^requires-python *= *">= *\([0-9.]*\)".*/\1/p' pyproject.toml)


.PHONY: run test docs lint bench clean check-python

# Before anything is downloaded (torch alone is 3.2 GB): a Python too old for Sonify would
# only be refused by pip at the end of it.
check-python:
	@have=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
	  || { echo "make: cannot run $(PYTHON); install Python $(NEED_PYTHON) or newer and give it as PYTHON=..." >&2; exit 1; }; \
	if [ "$$(printf '%s\n%s\n' "$(NEED_PYTHON)" "$$have" | sort -V | head -n 1)" != "$(NEED_PYTHON)" ]; then \
	  echo "make: $(PYTHON) is Python $$have; Sonify needs $(NEED_PYTHON) or newer (give another as PYTHON=python3.11)" >&2; exit 1; \
	fi

# venv, pip, then torch/torchvision first and pinned: these wheels are the CUDA builds (they
# also run on CPU).
MAKE_VENV := $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet --upgrade pip \
	&& $(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1

# Runtime dependencies only; a venv that `make test` built already holds them.
$(RUN_STAMP): pyproject.toml | check-python
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then touch $@; else \
	  set -x; $(MAKE_VENV) && $(PY) -m pip install --quiet -e . && touch $@; fi

$(STAMP): pyproject.toml | check-python
	$(MAKE_VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/sonify run $(ARGS)

# Lint, the import graph (no circles; core never imports bot), types, the documentation site
# built --strict (a broken link or a page missing from nav fails) into a folder of its own that
# is removed afterwards (not --quiet: it hides the warnings that --strict counts), then the
# tests on PYTEST_WORKERS pytest-xdist workers (each test file stays on one worker; `0`:
# in-process).
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/ruff check core bot tests bench docs
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	site=$$(mktemp -d) && NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict \
		--site-dir "$$site"; status=$$?; rm -rf "$$site"; exit $$status
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(VENV)/bin/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The documentation site at http://127.0.0.1:8000, rebuilt as the pages change.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict

bench: $(STAMP)
	$(PY) bench/pipeline_bench.py --preset tiny

clean:
	rm -rf $(VENV)
