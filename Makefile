# Two commands on a fresh machine (Python 3.11 + pip):
#   make run    create .venv from envs/ and run the whole pipeline on the bundled DC2 data
#   make test   create .venv from envs/ and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= profiles/local
SNAKEMAKE_ARGS ?=

.PHONY: env run test test-fast bench plan lock clean

$(BIN)/.installed: envs/requirements.lock envs/no-deps.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r envs/requirements.lock
	$(BIN)/pip install -q --no-deps -r envs/no-deps.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

env: $(BIN)/.installed

run: env
	$(BIN)/snakemake --profile $(PROFILE) $(SNAKEMAKE_ARGS)

test: env
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

test-fast: env
	$(BIN)/python -m pytest -ra -m "not slow and not slurm" $(PYTEST_ARGS)

bench: env
	$(BIN)/python -m pzpipe.bench $(BENCH_ARGS)

lock:
	$(PYTHON) -m venv /tmp/pzpipe-lock && /tmp/pzpipe-lock/bin/pip install -q -r envs/requirements.in \
	  && /tmp/pzpipe-lock/bin/pip freeze | grep -v '^hats-import' > envs/requirements.lock

clean:
	rm -rf results/* logs .snakemake
