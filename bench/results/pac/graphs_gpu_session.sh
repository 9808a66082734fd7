#!/usr/bin/env bash
# Issue 18, the cached epochs' fast path (branch h2-graphs): PAC with the cache packed on the GPU and its cached
# step replayed as CUDA graphs, against the same without graphs, against today's cache path, and LoRA for the ratio.
# Random-weight SmolLM2-135M shape, 4000 SST-2 sentences, max length 64, fp32, seed 0, no evaluation (as
# precision_gpu_session.sh). One device call, from a checkout of this branch, sent with carry=[".devcarry/p"]:
#   bash bench/results/pac/graphs_gpu_session.sh
# .devcarry/p holds smol-tok/ (the SmolLM2-135M tokenizer folder: config.json, tokenizer.json,
# tokenizer_config.json, chat_template.jinja, generation_config.json) and whl/ (pydantic and its three
# dependencies for Python 3.12), as for precision_gpu_session.sh. Unlike that script this one runs the
# checkout's own src/ (it does not copy .devcarry/p/src over it). Results: $OUT/graphs_results.json (every run's
# report) and $OUT/graphs_summary.json (the ratios), printed at the end too.
# On CPU, to check every command at a tiny size: DEVICE=cpu SAMPLES=64 LORA_SAMPLES=32 PY=.venv/bin/python \
#   OUT=/tmp/gout bash bench/results/pac/graphs_gpu_session.sh
set -u
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
P=${P:-$PWD/.devcarry/p}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
SAMPLES=${SAMPLES:-4000}
LORA_SAMPLES=${LORA_SAMPLES:-$SAMPLES}
OUT=${OUT:-/tmp/out}; R=${R:-/tmp/graphs_r}; mkdir -p $OUT $R; rm -f $R/*.json
if ! $PY -c "import pydantic" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /root/site $P/whl/*.whl 2>&1 | tail -1
fi
export PYTHONPATH=/root/site:$PWD/src
$PY -c "import edgeft.methods.pac.graphs, edgeft.methods.pac.device_view" || { echo "not the h2-graphs code"; exit 2; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
$PY -c "import torch,transformers,pydantic; print(torch.__version__, transformers.__version__, pydantic.__version__)"
date -u
T0=$SECONDS
C=(--model $P/smol-tok --random-llama smollm2-135m-shape --task sst2 --max-length 64 --seed 0 --eval none
   --precision fp32 --device $DEVICE ${THREADS:+--threads $THREADS})
# In-process PAC runs after LoRA (one process start fewer each): graphs off (device view only), today's cache path.
cat > $R/sweep.json <<'JSON'
[{"label": "nographs", "options": {"graphs": false}, "epochs": 5},
 {"label": "cachepath", "options": {"device_cache": "off"}, "epochs": 5}]
JSON
run() {  # name timeout args...
  local name=$1 limit=$(( $2 * ${TSCALE:-1} )); shift 2
  if (( SECONDS - T0 > ${BUDGET:-230} )); then echo "skip $name (time)"; return; fi
  timeout $limit $PY bench/pac_vs_baselines.py "${C[@]}" "$@" --out $R/tmp_$name.json --label "issue 18 graphs $name" \
    2>&1 | grep -E "train |Error|error|graph|Traceback" | grep -v "^\s*$"
  [ -f $R/tmp_$name.json ] && mv $R/tmp_$name.json $R/$name.json; rm -f $R/tmp_$name.png
  echo "$name done at $((SECONDS - T0)) s"
}
# 1-2: batch 64. PAC with graphs (a worker process: a failed capture falls back to eager, a crash loses this run only)
run b64_graphs 90 --train-samples $SAMPLES --batch-size 64 --epochs 5 --variants pac_cache
run b64_rest 150 --train-samples $LORA_SAMPLES --batch-size 64 --epochs 1 --variants lora --sweep $R/sweep.json
# 3-4: batch 16
run b16_graphs 90 --train-samples $SAMPLES --batch-size 16 --epochs 5 --variants pac_cache
run b16_rest 180 --train-samples $LORA_SAMPLES --batch-size 16 --epochs 1 --variants lora --sweep $R/sweep.json
# 5: the frozen forward at batch 64 (fp32 and bf16 autocast), the fill's yardstick
if (( SECONDS - T0 < ${BUDGET:-230} + 20 )); then
  timeout $(( 60 * ${TSCALE:-1} )) $PY bench/frozen_forward.py --model $P/smol-tok --train-samples $SAMPLES --batch-size 64 \
    --device $DEVICE --out $R/frozen.json 2>&1 | tail -2
fi
date -u
$PY - <<'PY'
import glob, json, os
R, OUT = os.environ.get("R", "/tmp/graphs_r"), os.environ.get("OUT", "/tmp/out")
runs = {os.path.basename(f)[:-5]: json.load(open(f)) for f in sorted(glob.glob(R + "/*.json")) if "sweep" not in f}
json.dump(runs, open(OUT + "/graphs_results.json", "w"), indent=1)
summary = {}
for bs in (64, 16):
    v = {**runs.get(f"b{bs}_graphs", {}).get("variants", {}), **runs.get(f"b{bs}_rest", {}).get("variants", {})}
    lora = v.get("lora")
    row = {"lora_epoch_s": lora and lora["train_time_s"], "lora_5_epochs_s": lora and 5 * lora["train_time_s"]}
    for name, key in (("graphs", "pac_cache"), ("nographs", "pac_cache:nographs"), ("cachepath", "pac_cache:cachepath")):
        p = v.get(key)
        if not p:
            continue
        ep = p["epoch_times_s"]
        row[name] = {"train_s": p["train_time_s"], "epochs_s": [round(t, 3) for t in ep],
                     "cached_epoch_s": sum(ep[1:]) / max(len(ep) - 1, 1), "phase_s": p.get("phase_s"),
                     "fast_path": p.get("fast_path"), "final_loss": p["final_train_loss"],
                     "speedup_vs_lora_5ep": lora and 5 * lora["train_time_s"] / p["train_time_s"]}
    summary[f"batch_{bs}"] = row
fr = runs.get("frozen")
if fr:
    summary["frozen_forward"] = fr.get("runs", fr)
    bf16 = [r["forward_s"] for r in fr.get("runs", []) if r["batch_size"] == 64 and r["precision"] == "bf16"]
    fill = ((summary["batch_64"].get("graphs") or {}).get("phase_s") or {}).get("fill_s")
    if bf16 and fill:
        summary["fill_b64_vs_frozen_bf16_forward"] = fill / bf16[0]
summary["goal"] = "PAC >= 8.64x LoRA (5 epochs) at batch 16 and 64; cached epoch < 0.3 s; fill <= 3x frozen bf16 fwd"
json.dump(summary, open(OUT + "/graphs_summary.json", "w"), indent=1)
print(json.dumps(summary, indent=1))
PY
# Last, if time and pytest allow: the CUDA-graph tests (skipped on CPU), graphed vs eager steps on tiny models.
if (( SECONDS - T0 < ${BUDGET:-230} + 30 )) && $PY -c "import pytest" 2>/dev/null; then
  timeout 60 $PY -m pytest -q -p no:cacheprovider tests/methods/pac/test_device_cache.py -k cuda_graphs 2>&1 | tail -3 \
    | tee $OUT/graphs_pytest.txt
fi
