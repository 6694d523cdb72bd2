# Two entry points: `make demo` (install + the whole pipeline on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE ?= 1

.PHONY: install install-test browser demo sweep test test-fast lint format gpu-check docs docs-check lock clean-outputs

install: $(VENV)/.installed             # what the pipeline needs (make demo)
install-test: $(VENV)/.installed-test   # + the test extra: pytest, ruff, and the deploy and serve extras

# torch/torchvision first, pinned to the wheels on the build machines, so nothing pulls another build.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e . -c requirements.lock
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test]" -c requirements.lock
	touch $@

# Debian's Chromium and ChromeDriver, which tests/test_serve.py drives headless (needs root, as in CI).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

demo: install
	dvc repro
	dvc metrics show
	cat metrics/report.md

# World seeds x unseen splits as DVC experiments (dvc.yaml's stages with -S overrides), queued and run one at a
# time (two torch jobs on 2 cores run ~5x slower each); `dvc queue status` follows them, `dvc exp show` compares
# them and `python -m benchmarks.experiments` tabulates C2S - seen-only. A teacher is trained once per seed: a
# split changes no input of its stage, so DVC's run cache restores it.
SEEDS ?= 0 1 2
OTHER_SPLIT ?= ['green circle','blue square','yellow triangle','red star','green cross']
sweep: install
	for s in $(SEEDS); do \
	  dvc exp run --queue -n seed$$s -S world.seed=$$s && \
	  dvc exp run --queue -n seed$$s-other -S world.seed=$$s -S "world.unseen=$(OTHER_SPLIT)" || exit 1; \
	done
	dvc queue start --jobs 1
	@echo "queued; follow with dvc queue status, then: python -m benchmarks.experiments"

# Two workers (pytest-xdist), one core and one torch thread each (tests/conftest.py); timing: docs/results.md.
# loadgroup: each of test_export.py and test_serve.py runs on one worker, so its module fixtures start once.
test: install-test
	python -m pytest -q -n 2 --dist loadgroup --durations=10

# The edit-test loop: everything but the tests marked slow (real dvc repro, DDP spawns, SIGKILL, CLI subprocesses).
test-fast: install-test
	python -m pytest -q -n 2 --dist loadgroup -m "not slow"

lint: install-test
	ruff check .
	ruff format --check .
	mypy

# Lays the code out as `make lint` checks it (ruff format: black's style at 120 columns) and sorts imports.
format: install-test
	ruff format .
	ruff check --select I --fix .

# The paper path (params-voc.yaml, ViT-B/16, 512 px, Segformer-B0 at batch 16) on one CUDA GPU in ~5-8 min, with
# what it measured; without CUDA the same steps at toy sizes (< 60 s, CI). Options: python -m benchmarks.gpu_check -h
gpu-check: install-test
	python -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

# The generated parts of the docs (results page, README's demo table, pipeline drawing): c2s docs.
# After a make demo: c2s docs --metrics metrics --wall-clock MM:SS, then commit the record with the pages.
docs: install
	c2s docs

docs-check: install
	c2s docs --check

# Every DVC output of the embedded default (the generated world, stores, runs, metrics); real datasets in data/ stay.
clean-outputs:
	rm -rf data/world data_cache models metrics dvc_plots

# Refresh the lock of what the install resolved (commit the result).
lock: install-test
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
