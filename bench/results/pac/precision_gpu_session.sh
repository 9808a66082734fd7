#!/usr/bin/env bash
# Issue 18 (docs/benchmarks_pac.md, "Performance"): the first of two calls, as sent with carry=[".devcarry/p"] and
#   the command: BUDGET=400 bash .devcarry/p/run_gpu.sh
# issue 18: fp32 vs bf16 (fused AdamW on CUDA) for LoRA and PAC, random-weight SmolLM2-135M shape, 4000 SST-2, len 64.
set -u
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
P=$PWD/.devcarry/p
python3 -m pip install -q --no-index --no-deps --no-compile --target /root/site $P/whl/*.whl 2>&1 | tail -1
cp -r $P/src/edgeft/. src/edgeft/   # this branch's code over the checkout (same base commit)
export PYTHONPATH=/root/site:$PWD/src
OUT=${OUT:-/tmp/out}; R=/tmp/r; mkdir -p $R
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
python3 -c "import torch,transformers,pydantic; print(torch.__version__, transformers.__version__, pydantic.__version__)"
date -u
T0=$SECONDS
C=(--model $P/smol-tok --random-llama smollm2-135m-shape --task sst2 --train-samples 4000 --max-length 64 --seed 0 --eval none)
merge() { python3 - <<'PY'
import json, glob, os
out = {}
for f in sorted(glob.glob("/tmp/r/*.json")):
    out[os.path.basename(f)[:-5]] = json.load(open(f))
json.dump(out, open(os.environ.get("OUT", "/tmp/out") + "/gpu_results.json", "w"), indent=1)
PY
}
timeout 120 python3 $P/bench/frozen_forward.py --model $P/smol-tok --batch-size 16 64 --out $R/frozen.json; merge
run() {  # name bs precision epochs variant
  if (( SECONDS - T0 > ${BUDGET:-420} )); then echo "skip $1 (time)"; return; fi
  timeout 200 python3 $P/bench/pac_vs_baselines.py "${C[@]}" --batch-size $2 --precision $3 --epochs $4 \
    --variants $5 --out $R/tmp_$1.json --label "issue 18 $1" 2>&1 | grep -E "train |Error|error" ; \
  [ -f $R/tmp_$1.json ] && mv $R/tmp_$1.json $R/$1.json; rm -f $R/tmp_$1.png; merge
  echo "$1 done at $((SECONDS - T0)) s"
}
run pac_b64_fp32 64 fp32 5 pac_cache
run pac_b64_bf16 64 bf16 5 pac_cache
run lora_b64_fp32 64 fp32 2 lora
run lora_b64_bf16 64 bf16 2 lora
run pac_b16_fp32 16 fp32 5 pac_cache
run pac_b16_bf16 16 bf16 5 pac_cache
run lora_b16_bf16 16 bf16 1 lora
run lora_b16_fp32 16 fp32 1 lora
date -u
# Second call (the probe, bench/precision_probe.py, sent as .devcarry/p/diag.py):
#   P=$PWD/.devcarry/p; python3 -m pip install -q --no-index --no-deps --no-compile --target /root/site $P/whl/*.whl
#   cp -r $P/src/edgeft/. src/edgeft/; PYTHONPATH=/root/site:$PWD/src timeout 80 python3 $P/diag.py $P
# (.devcarry/p held: src/edgeft of this branch without datasets, bench/, the pydantic wheels for Python 3.12 in whl/,
#  and smol-tok/: config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja, generation_config.json
#  of the SmolLM2-135M model folder.) Device time: about 7.7 min for the first call (start included), 45 s the second.
