# Two commands a newcomer needs: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit bench constraints clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	bash scripts/demo.sh

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q

test: lint typecheck unit

# Side-by-side benchmark on the simulator (~10 min); peers get their own venvs in bench/out/venvs.
bench: setup
	$(BIN)/python bench/peers.py; p=$$?; $(BIN)/python bench/scale.py; s=$$?; test $$p -eq 0 -a $$s -eq 0

# Pin the image's runtime dependencies anew (constraints.txt; the Dockerfile installs with -c).
constraints:
	bash scripts/constraints.sh $(PYTHON)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .airbyte-fleet src/*.egg-info .recipes
