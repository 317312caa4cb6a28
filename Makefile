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

ZOO_DIR ?= models/zoo

.PHONY: all venv model zoo serve test test-under-load test-unit test-component bench bench-family lint clean

all: test

$(VENV)/.installed: pyproject.toml transformer/_letterbox.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

model: venv
	$(PY) -m predictor.fetch --dest $(MODEL_DIR)

# A model repository for trying several models: yolov3-tiny, yolov3-tiny-608 (same weights, 608x608) and
# yolov4-tiny-random-weights (generated weights: for the plumbing only). Then: make serve MODEL_DIR=models/zoo
zoo: venv
	$(PY) -m predictor.fetch --dest models/yolov3-tiny
	$(PY) -m yolo_devtools.zoo --dest $(ZOO_DIR) --tiny-dir models/yolov3-tiny

serve: model
	@$(VENV)/bin/yolo-kserve serve --model-dir $(MODEL_DIR) --port $(HTTP_PORT) --grpc-port $(TRANSFORMER_GRPC_PORT) --predictor-port $(PREDICTOR_HTTP_PORT) --predictor-grpc-port $(PREDICTOR_GRPC_PORT) --host $(HOST) $(if $(VERBOSE),--verbose)

test: model
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# `make test` beside two busy CPU loops pinned to the CPUs the tests run on (taskset, when there is
# one): no test may depend on timing. The loops end with this recipe, however it ends (they also
# stop by themselves should their parent shell die).
BUSY_LOOP := import os; parent = os.getppid()\nwhile os.getppid() == parent: pass
test-under-load: model
	@pids=""; trap 'kill $$pids 2>/dev/null; wait $$pids 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; \
	cpus=$$(taskset -pc $$$$ 2>/dev/null | sed 's/.*: //'); \
	for i in 1 2; do \
		if [ -n "$$cpus" ]; then taskset -c "$$cpus" $(PY) -c $$'$(BUSY_LOOP)' & else $(PY) -c $$'$(BUSY_LOOP)' & fi; \
		pids="$$pids $$!"; \
	done; \
	echo "test-under-load: busy loops$$pids on CPUs $${cpus:-(no taskset: any)}"; \
	$(MAKE) --no-print-directory test

test-unit: venv
	$(PY) -m pytest -q -m unit $(PYTEST_ARGS)

test-component: model
	$(PY) -m pytest -q -m component $(PYTEST_ARGS)

bench: model
	$(PY) -m yolo_devtools.bench --start-stack --model-dir $(MODEL_DIR) --engine-only --predictor-only --json bench-results/bench.json --chart bench-results/bench.png

# Every family detector: engine vs the fp32 GEMM floor, predictor vs the raw engine (docs/performance.md)
bench-family: venv
	$(PY) -m predictor.fetch --dest models/yolov3-tiny
	$(PY) -m yolo_devtools.family_bench --json bench-results/family.json

clean:
	rm -rf $(VENV) models .pytest_cache
