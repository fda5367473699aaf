# Two commands do all the setup on a fresh machine:
#   make demo   - every experiment at the demo preset (offline, CPU, minutes); prints the report's path
#   make test   - ruff, mypy, then the test suite (what CI runs)
# While working: make test-fast - ruff, mypy, and every test not marked slow (under 3 minutes on 2 cores)
#                make docs      - the documentation site (docs/, mkdocs --strict) into build/site; the tests build it too
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast docs install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/atml demo

test: $(BIN)/.installed
	$(BIN)/ruff check src tests scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "the site: build/site/index.html"

test-fast: $(BIN)/.installed
	$(BIN)/ruff check src tests scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
