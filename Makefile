# Two commands: `make demo` and `make test`. Each creates .venv from requirements.lock first (exact
# versions and hashes of every package), recreating it whenever the lock changes, then runs.
# `make lock` regenerates the lock from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
UV     := .venv-tools/bin/uv
# the lock's platform: CI, the cluster image (rayproject/ray:2.60.0-py311-gpu) and the dev machines
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28

.PHONY: demo test test-unit test-fast bench bench-gpu rehearsal accuracy screenshots lock venv clean

$(STAMP): $(LOCK) pyproject.toml
	@$(PYTHON) -c 'import platform, sys; ok = sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64" and sys.platform == "linux"; sys.exit(0 if ok else "$(LOCK) is for CPython 3.11 on Linux x86_64; elsewhere install from pyproject: pip install -e \".[test]\"")'
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) tuning/search.py
	$(PY) tuning/search.py --first-shot --smoke-test --tracking-uri mlruns/first-shot  # its own registry

test: $(STAMP)
	$(PY) -m pytest

# the unit tier alone (under a minute on 2 cores); test-fast adds the integration tier (everything but Ray and searches)
test-unit: $(STAMP)
	$(PY) -m pytest -m "not slow and not integration"

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) -m bench.run

# the whole path (cache, search, evaluate, score, pyfunc load, DataLoader) on one synthetic machine type at
# DCASE 2020 size and at a quarter of it, measured per stage -> REHEARSAL.md (70 min on 2 idle cores; about 11 GiB
# of work folder, a temporary one: python -m bench.rehearsal --work DIR puts it elsewhere)
rehearsal: $(STAMP)
	$(PY) -m bench.rehearsal

# on a machine with a CUDA GPU: the network rows, torch.compile, scoring and a --use-gpu smoke search,
# merged into BENCHMARKS.md as its "## GPU" section (under 5 minutes)
bench-gpu: $(STAMP)
	$(PY) -m bench.gpu --merge BENCHMARKS.md

# every part of the accuracy report (the main tables, the objective, network and domain studies, recipes, bf16,
# attribute classes) -> ACCURACY.md: hours on 2 cores; --only PART runs one (docs/accuracy.md)
accuracy: $(STAMP)
	$(PY) -m bench.accuracy

# the MLflow pages a smoke search writes, shot with headless Chromium -> docs/screenshots/ (Debian:
# apt-get install chromium; about three minutes)
screenshots: $(STAMP)
	$(PY) docs/screenshots.py

$(UV):
	$(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install --quiet uv==0.13.9

# exact versions with hashes of everything `pip install -e '.[test]'` would pull in, for LOCK_TARGET
lock: $(UV)
	$(UV) pip compile pyproject.toml --extra test --generate-hashes $(LOCK_TARGET) --quiet -o $(LOCK)

clean:
	rm -rf data/synthetic data/synthetic-first-shot data/*-mimimi-cache runs .pytest_cache  # never a downloaded set
