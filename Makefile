# hybridrec: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DATA_ROOT ?= data
DATASET ?= $(DATA_ROOT)/dataset
PYTEST_ARGS ?=

.PHONY: venv demo data evaluate test test-fast bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test,bench]'
	@touch $(STAMP)

## Prepare the demo dataset: $$HYBRIDREC_DATA, else a GroupLens download, else synthetic data.
$(DATASET)/manifest.json: | $(STAMP)
	$(PY) -c "from cluster.jobs import demo_source, ingest_job; ingest_job(demo_source('$(DATA_ROOT)'), '$(DATASET)')"

data: $(DATASET)/manifest.json

evaluate: data
	$(VENV)/bin/hybridrec evaluate $(DATASET)

## The demo so far: ingest, split and evaluate the baselines (training, tuning, indexing and the
## GraphQL API are added to this target as they land).
demo: evaluate
	@echo "demo: ingested $(DATASET) and evaluated the popularity baseline on the protocol."

test: $(STAMP)
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/synthetic_scale.py --interactions 25000000

clean:
	rm -rf $(VENV) $(DATA_ROOT) .pytest_cache
