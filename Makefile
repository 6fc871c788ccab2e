# Two entry points (see README): `make app` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: requirements.txt requirements-nlp.txt requirements-dev.txt pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools>=70" wheel
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -r requirements-nlp.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(BIN)/.installed

# the optional Ray extra (medmm serve, predict --engine ray): installed for the tests only, `make app` stays without it
# (docs/scale.md: ~35 s to install, tests/test_ray.py ~100 s)
$(BIN)/.ray: $(BIN)/.installed requirements-ray.txt
	$(BIN)/pip install -q -r requirements-ray.txt
	touch $@

# the optional int8 extra (NNCF: quantises openvino-int8's image encoder), for tests/test_int8.py; make app stays
# without it (a cached int8 model runs on openvino alone)
$(BIN)/.int8: $(BIN)/.installed requirements-int8.txt
	$(BIN)/pip install -q -r requirements-int8.txt
	touch $@

app: setup
	$(BIN)/python app.py

# Debian's chromium drives the browser test (Playwright); installed when missing and we are root (CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != "0" ] || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null) || \
	  echo "could not install chromium: the browser test will be skipped"

test: setup $(BIN)/.ray $(BIN)/.int8 chromium
	$(BIN)/python -m pytest -q

# Issue 28: one prepared run on a CUDA machine (bench, fp16/bf16, training at the size a GPU affords), every figure a
# JSON under runs/gpu/<timestamp>/ (docs/bench.md, "GPU run"). Uses .venv when present, never `setup` (the GPU
# machine may have no package index). GPU_ARGS="--out DIR", "--smoke" (CPU, tiny), "--budget-s 540".
gpu:
	bash scripts/gpu_run.sh $(GPU_ARGS)

.PHONY: setup app test chromium gpu
