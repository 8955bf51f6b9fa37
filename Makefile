# Two commands do everything: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Exact versions only here; pyproject.toml declares ranges.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install test demo bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS) -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests bench

demo: install
	$(BIN)/alexnet demo

bench: install
	$(BIN)/python bench/bench_step.py
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_predict.py

clean:
	rm -rf $(VENV) runs
