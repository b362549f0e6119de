# nnspec: `make demo` runs the main job, `make test` the whole test suite.
# Each creates .venv (torch 2.13.0 CPU first, then the project with its test extras) and
# installs Graphviz's `dot` (and Chromium, for the diagram page test) when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system demo test test-fast test-slow lint bench docs golden clean

setup: $(STAMP) system

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages: Graphviz for diagrams, Chromium for the headless test of the HTML page; and
# Mermaid's own mermaid.min.js (from npm, one file) to check the .mmd output in that browser.
MERMAID_JS := node_modules/mermaid/dist/mermaid.min.js

system:
	@command -v dot >/dev/null || (apt-get update -q && apt-get install -y -q graphviz)
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) || \
		echo "chromium could not be installed; the HTML page test will be skipped"
	@test -f $(MERMAID_JS) || (command -v npm >/dev/null && mkdir -p node_modules/mermaid && cd node_modules/mermaid && \
		npm pack --silent mermaid@11 >/dev/null && tar -xzf mermaid-*.tgz --strip-components=1 package/dist/mermaid.min.js && \
		rm -f mermaid-*.tgz) || echo "mermaid.min.js could not be fetched; the Mermaid check of .mmd files will be skipped"

demo: setup
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check nnspec builder backends tests bench scripts examples
	$(BIN)/mypy

# The default suite (lint, types, every test not marked slow) fits CI's 10 minutes on 2 cores;
# the training runs (LeNet-5 on digits, seq2seq reversal, GPT on characters, BERT pre-training)
# and the DDP wrap are marked slow: `make test-slow`.
test: setup lint
	$(BIN)/pytest -n 2 -m "not slow"

test-fast: $(STAMP)
	$(BIN)/pytest -n 2 -m "not slow"

test-slow: $(STAMP)
	$(BIN)/pytest -n 2 -m slow

# Every benchmark, each printing its table (bench/README.md has the figures and what they mean).
bench: setup
	$(BIN)/python bench/check_scaling.py
	$(BIN)/python bench/torch_speed.py --threads 2 --repeats 7
	$(BIN)/python bench/onnx_bench.py --repeat 3
	$(BIN)/python bench/graphviz_bench.py --repeat 5

docs: $(STAMP) system
	$(BIN)/python -m nnspec.backends.graphviz.docs

golden: $(STAMP)
	NNSPEC_UPDATE_GOLDEN=1 $(BIN)/pytest -q -k golden

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache *.egg-info
