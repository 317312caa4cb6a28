# yolo-kserve: two commands do all set-up on a fresh machine:
#   make serve   local predictor + transformer (yolov3-tiny) on 127.0.0.1, transformer REST on :8080
#   make test    everything in tests/ (unit, component with real servers, fault and fuzz tiers)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_DIR ?= models/yolov3-tiny
HTTP_PORT ?= 8080
PREDICTOR_HTTP_PORT ?= 8085
PREDICTOR_GRPC_PORT ?= 8086
TRANSFORMER_GRPC_PORT ?= 8081
HOST ?= 127.0.0.1
PYTEST_ARGS ?=

.PHONY: all venv model serve test test-unit test-component bench lint clean

all: test

$(VENV)/.installed: pyproject.toml transformer/_letterbox.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

model: venv
	$(PY) -m predictor.fetch --dest $(MODEL_DIR)

serve: model
	@$(VENV)/bin/yolo-kserve serve --model-dir $(MODEL_DIR) --port $(HTTP_PORT) --grpc-port $(TRANSFORMER_GRPC_PORT) --predictor-port $(PREDICTOR_HTTP_PORT) --predictor-grpc-port $(PREDICTOR_GRPC_PORT) --host $(HOST) $(if $(VERBOSE),--verbose)

test: model
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -q -m unit $(PYTEST_ARGS)

test-component: model
	$(PY) -m pytest -q -m component $(PYTEST_ARGS)

bench: model
	$(PY) -m yolo_devtools.bench --start-stack --model-dir $(MODEL_DIR) --engine-only --predictor-only --json bench-results/bench.json --chart bench-results/bench.png

clean:
	rm -rf $(VENV) models .pytest_cache
