# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed


.PHONY: run test docs lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision first and pinned: these wheels are the CUDA builds (they also run on CPU).
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
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
