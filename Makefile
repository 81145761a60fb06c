# DeepFakeNet — `make help` lists the targets. On a fresh machine `make demo` and `make test`
# each build the virtual environment first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DVC := $(VENV)/bin/dvc
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k split -x"`.
PYTEST_ARGS ?=

# Where the service keeps its model store (BentoML) and records (SQLite, Parquet, images).
export BENTOML_HOME ?= $(CURDIR)/bentoml-home
export BENTOML_DO_NOT_TRACK ?= True
HOST ?= 127.0.0.1
PORT ?= 3000
# Seconds `make serve` waits on SIGTERM for open requests before cancelling them (uvicorn's
# graceful-shutdown timeout, a `bentoml serve` option: without it a stuck client keeps the server
# up). Whole seconds, at least 1: BentoML drops a 0.
SHUTDOWN_TIMEOUT ?= 3
# Where `make dashboards` listens (the detector page at /, the admin page at /admin).
DASHBOARD_PORT ?= 8501
# Where `make mlflow-ui` listens.
MLFLOW_PORT ?= 5000

export DVC_NO_ANALYTICS := 1
export MPLBACKEND := Agg
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: help setup federated-setup federated-demo federated-promote demo data train evaluate video-eval generalisation retrain rollback bento serve bento-build dashboards test test-fast lint format mlflow-ui clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet --progress-bar off -e ".[dev]"
	touch $@

setup: $(VENV)/.installed ## Create .venv with the package and dev tools (idempotent)

# Flower pins fastapi, starlette and uvicorn several versions behind the service's BentoML: the
# federated work gets a venv of its own, so the service's environment never changes under it.
FED_VENV ?= .venv-federated
FED_PY := $(FED_VENV)/bin/python

$(FED_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(FED_VENV)
	$(FED_PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(FED_PY) -m pip install --quiet --progress-bar off -e ".[federated]"
	touch $@

federated-setup: $(FED_VENV)/.installed ## Create .venv-federated: the package + Flower (idempotent)

federated-demo: federated-setup ## Flower on loopback: 3 non-IID sites, SecAgg+ rounds, comparison
	$(FED_PY) training/federated.py compare_dp=true $(ARGS)

federated-promote: setup ## Put a registered (e.g. federated) version through the gate: VERSION=<N>
	@if [ -z "$(VERSION)" ]; then echo "usage: make federated-promote VERSION=<N>" >&2; exit 2; fi
	$(PY) training/retrain.py challenger=$(VERSION) $(ARGS)

data: setup ## Generate the embedded data set if data/ has none (ARGS="synth.n_real=200"), DVC it
	@if [ -z "$$(find data -type f -name '*.png' -print -quit 2>/dev/null)" ]; then \
		$(PY) training/generate.py $(ARGS); \
	else echo "data/ already has images: not regenerating"; fi
	$(DVC) add data
	$(DVC) push --quiet || echo "dvc push failed: data stays versioned locally (see README: DVC remote)"

train: setup ## Train on data/ (extra Hydra overrides: make train ARGS="trainer.max_epochs=2")
	$(PY) training/train.py $(ARGS)

evaluate: setup ## Evaluate a registered model (make evaluate REF=champion|latest|<N> ARGS=...)
	$(PY) training/evaluate.py model_ref=$(or $(REF),latest) $(ARGS)

video-eval: setup ## Clips from the data tree: choose the video rule on val, report it on test
	$(PY) training/video.py model_ref=$(or $(REF),champion) $(ARGS)

# Trains one model per fold (every family out, every source out, plus one on everything): 23
# trainings of the demo recipe, about 80 min on 2 CPUs; choose folds with ARGS="protocol.sources=[...]
# protocol.families=[...]"; ARGS="--quick" runs it on tiny data in a minute.
generalisation: setup ## Leave-one-out + perturbation table of a recipe (EXP=demo|generalise)
	$(PY) benchmarks/generalisation.py experiment=$(or $(EXP),demo) $(ARGS)

demo: data ## The main job: data -> DVC -> train -> register -> evaluate (+ clips), embedded default
	$(PY) training/train.py experiment=demo
	$(PY) training/evaluate.py model_ref=latest robustness=true
	$(PY) training/video.py model_ref=latest
	@echo
	@echo "Test metrics: reports/evaluate/latest/metrics.json (per source and family: per_group.md,"
	@echo "under JPEG, downscaling, blur and a camera's mosaic + demosaic: robustness.md)"
	@$(PY) -c "import json; r = json.load(open('reports/evaluate/latest/metrics.json')); print('model version', r['model_version'], {k: round(v, 4) for k, v in r['metrics'].items()})"
	@echo "Browse runs and the registry:  make mlflow-ui   (http://127.0.0.1:5000)"
	@echo "Serve the champion over HTTP:  make serve       (http://$(HOST):$(PORT), docs at /)"

retrain: setup ## Feedback -> DVC data version -> challenger -> promote if better (safe for cron)
	$(PY) training/retrain.py $(ARGS)

rollback: setup ## Make the previous champion the champion again
	$(PY) training/rollback.py

bento: setup ## Import the MLflow champion into the BentoML model store (REF=champion|<N>)
	$(PY) serving/import_model.py model_ref=$(or $(REF),champion)

serve: setup ## Serve the champion on HOST:PORT, 127.0.0.1:3000 (imports it if the store lacks it)
	$(PY) serving/import_model.py model_ref=champion if_missing=true
	$(VENV)/bin/bentoml serve serving.service:DeepfakeDetector --host $(HOST) --port $(PORT) \
		--timeout-graceful-shutdown $(SHUTDOWN_TIMEOUT)

# The service URL defaults to this Makefile's HOST:PORT (what `make serve` uses); set
# DEEPFAKENET_SERVICE_URL for another one. The admin page stays closed until
# DEEPFAKENET_ADMIN_PASSWORD is set. Stores and registry: the service's DEEPFAKENET_* variables.
dashboards: setup ## Detector + admin pages on HOST:DASHBOARD_PORT, 127.0.0.1:8501 (needs serve)
	DEEPFAKENET_SERVICE_URL="$${DEEPFAKENET_SERVICE_URL:-http://$(HOST):$(PORT)}" \
	$(VENV)/bin/streamlit run dashboards/app.py --server.address $(HOST) \
		--server.port $(DASHBOARD_PORT) --server.headless true --browser.gatherUsageStats false

# The build options are pyproject.toml's [tool.bentoml.build]: BentoML takes the Bento's Python
# requirements from [project].dependencies there (no second list) and ships src/deepfakenet/ at the
# Bento's root. Unlocked and without a container engine: what CI runs (tests/test_bento_build.py).
bento-build: bento ## Build a Bento (service + code + model) for deployment: `bentoml containerize` it
	$(VENV)/bin/bentoml build -f pyproject.toml .

test: setup federated-setup ## Run the whole test suite (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup ## Skip the slow end-to-end tests while iterating
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

mlflow-ui: setup ## Browse runs and registered models on HOST:MLFLOW_PORT, 127.0.0.1:5000
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host $(HOST) --port $(MLFLOW_PORT)

clean: ## Remove run outputs (keeps data/, mlflow.db and the venv)
	rm -rf logs reports outputs .pytest_cache .ruff_cache
