# `make demo` and `make test` each do all their own set-up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROMPT ?= Redis Streams와 리스트의 차이를 알려줘

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/runstream demo "$(PROMPT)"

lint: $(STAMP)
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	$(BIN)/mypy

test: $(STAMP) lint
	scripts/ensure-redis
	RUNSTREAM_TEST_REQUIRE_REDIS=1 $(BIN)/pytest

bench: $(STAMP)
	$(BIN)/runstream bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
