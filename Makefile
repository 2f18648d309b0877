# Two commands on a fresh machine (Python 3.11 + pip):
#   make run    create .venv from envs/, write the demo HATS catalog, run the whole pipeline
#   make test   create .venv from envs/, write the demo HATS catalog, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= profiles/local
SNAKEMAKE_ARGS ?=

DEMO := resources/dc2_object_hats

.PHONY: env demo lephare-data run test test-fast bench plan lock clean

$(BIN)/.installed: envs/requirements.lock envs/no-deps.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r envs/requirements.lock
	$(BIN)/pip install -q --no-deps -r envs/no-deps.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

env: $(BIN)/.installed

# the default input: the DC2 validation sample as a small synthetic Rubin-like HATS
# Object catalog (pzpipe.planning.synth; nothing is downloaded)
$(DEMO)/properties: $(BIN)/.installed workflow/src/pzpipe/planning/synth.py
	$(BIN)/python -m pzpipe.planning.synth $(DEMO) --rows-per-pixel 3000

demo: $(DEMO)/properties

# LePhare's auxiliary data (a subset of lephare-data, resources/lephare/PROVENANCE.md),
# unpacked once, checked against its sha256 list (config: algorithms.lephare.lepharedir)
LEPHARE_DATA := resources/lephare/data
$(LEPHARE_DATA)/.unpacked: resources/lephare/lephare-data-subset.tar.xz resources/lephare/SHA256SUMS
	rm -rf $(LEPHARE_DATA).tmp && mkdir -p $(LEPHARE_DATA).tmp
	tar -xJf resources/lephare/lephare-data-subset.tar.xz -C $(LEPHARE_DATA).tmp
	cd $(LEPHARE_DATA).tmp/data && sha256sum --quiet -c ../../SHA256SUMS
	rm -rf $(LEPHARE_DATA) && mv $(LEPHARE_DATA).tmp/data $(LEPHARE_DATA) && rm -rf $(LEPHARE_DATA).tmp
	touch $@

lephare-data: $(LEPHARE_DATA)/.unpacked

run: env demo lephare-data
	$(BIN)/snakemake --profile $(PROFILE) $(SNAKEMAKE_ARGS)

test: env demo lephare-data
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

test-fast: env demo lephare-data
	$(BIN)/python -m pytest -ra -m "not slow and not slurm" $(PYTEST_ARGS)

bench: env lephare-data
	$(BIN)/python -m pzpipe.planning.bench $(BENCH_ARGS)

lock:
	$(PYTHON) -m venv /tmp/pzpipe-lock && /tmp/pzpipe-lock/bin/pip install -q -r envs/requirements.in \
	  && /tmp/pzpipe-lock/bin/pip freeze | grep -v '^hats-import' > envs/requirements.lock

clean:
	rm -rf results/* logs .snakemake
