# Two entry points: `make demo` (set up + run the main job) and `make test` (set up, then
# ruff check, ruff format --check and mypy — strict on the engine and protocol packages —
# and then the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ringfl-installed

.PHONY: demo test lint typecheck format setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Pin torch to the CPU build first: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# The dashboard test drives Debian's chromium + chromium-driver; install them as root when missing.
	if [ "$$(id -u)" = 0 ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; fi
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m ringfl demo

test: $(STAMP) lint typecheck
	$(PY) -m pytest

typecheck: $(STAMP)
	$(VENV)/bin/mypy

lint: $(STAMP)
	$(VENV)/bin/ruff check ringfl tests experiments examples
	$(VENV)/bin/ruff format --check ringfl tests experiments examples

format: $(STAMP)
	$(VENV)/bin/ruff format ringfl tests experiments examples
	$(VENV)/bin/ruff check --fix ringfl tests experiments examples

clean:
	rm -rf $(VENV) build dist *.egg-info runs
