# The two commands of the README: `make demo` and `make test`.
# Both create .venv from nothing; pip's wheel cache makes the second time fast.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python builds from source; the multimodal part is not needed.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: demo test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[$*]"
	touch $@

# `prompt-descent models` first: one completion per installed model, in a child process,
# so a runtime that crashes on this CPU stops here with one line naming the model and the
# CPU flags, instead of a segfault in the middle of a run or of the suite.
demo: $(VENV)/.installed-local
	$(BIN)/prompt-descent models
	$(BIN)/prompt-descent optimize data/contains_answer.yaml

test: $(VENV)/.installed-dev,local-small
	$(BIN)/prompt-descent models
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: $(VENV)/.installed-dev,local-small
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
