# hybridrec: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The exact, hash-checked dependency set that `make demo` and `make test` install (Linux x86-64,
# CPython 3.11; torch is the CPU build that lies on these machines in /opt/wheels). `make lock`
# refreshes it from pyproject.toml's ranges; commit both together.
LOCK := requirements.lock
UV_VERSION ?= 0.13.9
DATA_ROOT ?= data
DATASET ?= $(DATA_ROOT)/dataset
PYTEST_ARGS ?=

.PHONY: venv lock demo redis browser wrk test bench clean

venv: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PIP) check
	@touch $(STAMP)

## Re-resolve requirements.lock from pyproject.toml (newest versions its ranges admit, with hashes).
## Then `make test` on the new lock before committing it.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet 'uv==$(UV_VERSION)'
	printf 'setuptools>=68\nwheel\n' | $(VENV)/bin/uv pip compile pyproject.toml - --extra test --extra bench \
		--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels \
		--custom-compile-command "make lock" --upgrade -o $(LOCK)

## Everything: data ($$HYBRIDREC_DATA, else a GroupLens download, else synthetic), ingest, train,
## tune, index, publish, then serve the API with GraphiQL; prints the GraphiQL and dashboard URLs.
## HYBRIDREC_DATA defaults to the MovieLens copy beside the checkout (../shared/data/ml-latest-small)
## when there is one, so a machine without network trains on real data; set it to choose another.
LOCAL_MOVIELENS := $(wildcard ../shared/data/ml-latest-small/ratings.csv)
demo: $(STAMP)
	@echo "make demo serves in development mode (--dev): no API keys, every operation open to anyone on this machine"
	$(if $(HYBRIDREC_DATA),,$(if $(LOCAL_MOVIELENS),@echo "make demo: HYBRIDREC_DATA=$(patsubst %/,%,$(dir $(LOCAL_MOVIELENS))) (the MovieLens copy beside the checkout)"))
	HYBRIDREC_DATA="$(or $(HYBRIDREC_DATA),$(patsubst %/,%,$(dir $(LOCAL_MOVIELENS))))" $(VENV)/bin/hybridrec demo --dev --data-root $(DATA_ROOT) --bundle-root $(DATA_ROOT)/bundles --host 127.0.0.1 --port 8000

## redis-server from Debian's packages for the Redis-path tests (CI runs as root on a clean machine).
redis: 
	@command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null)

## Chromium and chromedriver from Debian's packages for the demo page's browser test (tests/test_demo_page.py).
browser:
	@(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

## wrk from Debian's packages, the API load bench's load generator (without it the bench falls back to
## its Python client, which needs a core of its own and reports lower rates).
wrk:
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) \
		|| echo "wrk could not be installed: bench/api_load.py uses its Python client"

test: $(STAMP) redis browser
	$(PY) -m pytest -q -rsx --durations=20 $(PYTEST_ARGS)

## The benches and one report, bench/results/report.md (+ PNGs, JSON of the raw figures):
## quality (the protocol table on ml-latest-small and BENCH_SYNTHETIC synthetic interactions),
## scale (BENCH_SIZES through ingest, tuning, each signal, hybrid and index; resumable: a stage
## whose JSON exists is skipped, SCALE_ARGS=--force reruns), API load (ml-latest-small's bundle and
## the largest scale size's), faults, our ALS against
## implicit's (ml-latest-small and ALS_SIZES), the blend tuners (GA vs grid vs random on
## ml-latest-small with TUNER_ARGS; tuning time at TUNER_SYNTHETIC interactions), then the report.
## Quality, ALS-against-implicit and tuner results measured with the same settings are kept too
## (each script's --force reruns them); API load and faults run every time.
## The full run (25M) takes hours on 2 cores; `make test` runs a tiny one (tests/test_bench_report.py).
BENCH_OUT ?= bench/results
BENCH_SYNTHETIC ?= 1000000
BENCH_SIZES ?= 1000000 5000000 25000000
QUALITY_ARGS ?=
SCALE_ARGS ?=
API_LOAD_ARGS ?= --results $(BENCH_OUT)
## the API load bench again on the largest scale size's bundle (the scale bench's index stage publishes it)
API_LOAD_SCALE ?= $(lastword $(BENCH_SIZES))
API_LOAD_SCALE_ARGS ?= --phases reference,cached,uncached,explain --explain-connections 4
FAULTS_ARGS ?= --results $(BENCH_OUT)
ALS_SIZES ?= 5000000 25000000
ALS_ARGS ?=
TUNER_SYNTHETIC ?= 25000000
TUNER_ARGS ?= --test

bench: $(STAMP) redis wrk
	$(PY) bench/quality.py --out $(BENCH_OUT) --synthetic $(BENCH_SYNTHETIC) $(QUALITY_ARGS)
	$(PY) bench/scale.py --out $(BENCH_OUT) --sizes $(BENCH_SIZES) $(SCALE_ARGS)
	-$(PY) bench/api_load.py $(API_LOAD_ARGS)
	-$(PY) bench/api_load.py --scale $(API_LOAD_SCALE) --results $(BENCH_OUT)/api_load_scale $(API_LOAD_SCALE_ARGS)
	-@if [ -f bench/faults.py ]; then $(PY) bench/faults.py $(FAULTS_ARGS); else echo "bench/faults.py not found: faults left out"; fi
	$(PY) bench/als_vs_implicit.py --out $(BENCH_OUT) --interactions $(ALS_SIZES) $(ALS_ARGS)
	$(PY) bench/tuner.py --out $(BENCH_OUT) --synthetic $(TUNER_SYNTHETIC)
	$(PY) bench/tuner.py --out $(BENCH_OUT) $(TUNER_ARGS)
	$(PY) bench/report.py --results $(BENCH_OUT)

clean:
	rm -rf $(VENV) $(DATA_ROOT) .pytest_cache
