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

# Each benchmark's output (stdout and stderr) is appended, dated, to docs/measurements.md.
BENCHES := bench_step bench_data bench_pipeline bench_train bench_predict

bench: install
	{ echo; echo "## make bench, $$(date -u +%F) on $$(uname -n) ($$(nproc) cores)"; echo; \
	  echo '```'; \
	  for bench in $(BENCHES); do \
	    echo "$$ python bench/$$bench.py"; $(BIN)/python bench/$$bench.py 2>&1; \
	  done; \
	  echo '```'; } >> docs/measurements.md
	@echo "make bench: results appended to docs/measurements.md"

clean:
	rm -rf $(VENV) runs
