#!/usr/bin/env bash
# Issue 18, one device call (2026-12-06): why bf16 LoRA is slower than fp32 on an H200, and the acceptance runs on
# this branch's code (h4-bf16): LoRA's PEFT input up-cast off under autocast, PAC's host-kept backbone lent in the
# dtype Precision.cast_frozen stored it in (it was lent in fp32 under bf16), FROZEN_CAST=all (the residual stream
# in bf16) as a choice (--frozen-cast all), and precision tf32.
# Random-weight SmolLM2-135M shape, 4000 SST-2 sentences, max length 64, seed 0, no evaluation.
# Run from the repo root as   bash bench/results/pac/issue18_1206/session.sh
# sent with carry=[".devcarry/t"] (smol-tok/: SmolLM2's tokenizer files; whl/: pydantic for Python 3.12).
#
# In this order, each under `timeout`, skipping what would start past BUDGET (330) seconds after set-up, so the
# call ends by ~6.5 min (expected: ~60 s per profile call, 30-60 s a run):
# (a) prof:fp32,bf16 - bench/profile_step.py: 10 LoRA steps at batch 64 under torch.profiler per precision; its
#     file holds the ms per step unprofiled, the GPU's busy ms per step (sum of kernel times), kernel launches,
#     the CUDA runtime's sync/memcpy calls, one step's aten ops by input dtypes (casts, host reads), and the top 25
#     ops by GPU time and by CPU time.
# (b) the acceptance runs: pac/lora x fp32/bf16 at batch 64, fp32 at batch 16 (LoRA b16 never ran on the trainer
#     without per-step syncs); then prof:bf16-all,tf32 (FROZEN_CAST all; TF32) and their runs, then bf16 at 16.
#     LoRA runs 1 epoch and is extrapolated to PAC's 5 (5 x epoch 1, as issue18_1204/1205 did); PAC runs 5.
#     Each run is one variant in its own process (--in-process: no second worker process to start).
# Skipped runs in a second call, e.g. ONLY="prof:bf16-all,tf32 lora_bf16all_b16 pac_bf16all_b16" bash ...
# (names: prof:<precision>,... or <pac|lora>_<fp32|tf32|bf16|bf16all>_b<batch>; bf16all = --frozen-cast all).
# $OUT at the end (4 files): summary.json (every run's epochs, losses and ratio to the best LoRA, and the
# profiles' headline numbers), profiles.tar.gz (prof/profile_lora_<precision>_b64.txt and their summary),
# runs.tar.gz (runs/<name>.json, every run's report), session.log (this output).
# On CPU, to check every command at a tiny size (~10 min on 2 cores):
#   DEVICE=cpu SHAPE=tiny SAMPLES=64 PY=.venv/bin/python P=.devcarry/t OUT=/tmp/s6 BUDGET=9999 TSCALE=4 \
#     bash bench/results/pac/issue18_1206/session.sh
set -u
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export P=${P:-$PWD/.devcarry/t} OUT=${OUT:-/tmp/out}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
SAMPLES=${SAMPLES:-4000}
SHAPE=${SHAPE:-smollm2-135m-shape}
BUDGET=${BUDGET:-330}
mkdir -p $OUT/runs $OUT/prof
exec > >(tee $OUT/session.log) 2>&1
if ! $PY -c "import pydantic" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /root/site $P/whl/*.whl 2>&1 | tail -1
fi
export PYTHONPATH=/root/site:$PWD/src
$PY -c "from edgeft.train.precision import FROZEN_CAST, set_tf32" || { echo "not the h4-bf16 code"; exit 2; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null
$PY -c "import torch,transformers,peft,pydantic; print(torch.__version__, transformers.__version__, peft.__version__, pydantic.__version__)"
date -u
T0=$SECONDS
C=(--model $P/smol-tok --random-llama $SHAPE --task sst2 --train-samples $SAMPLES --max-length 64 --seed 0
   --eval none --device $DEVICE)
run() {  # name timeout args...
  local name=$1 limit=$(( $2 * ${TSCALE:-1} )); shift 2
  if (( SECONDS - T0 > BUDGET )); then echo "skip $name (time: $((SECONDS - T0)) s)"; return; fi
  echo "== $name at $((SECONDS - T0)) s"
  timeout $limit $PY bench/pac_vs_baselines.py "${C[@]}" "$@" --in-process --out $OUT/runs/tmp_$name.json \
    --label "issue 18 1206 $name" 2>&1 | grep -E "train |Error|error|Traceback" | grep -v "^\s*$"
  [ -f $OUT/runs/tmp_$name.json ] && mv $OUT/runs/tmp_$name.json $OUT/runs/$name.json; rm -f $OUT/runs/tmp_$name.png
  echo "   $name done at $((SECONDS - T0)) s"
}
profile() {  # LoRA at batch 64 under torch.profiler, for precisions a,b,... (bf16-all: FROZEN_CAST all)
  local precs=${1//,/ }
  [ $DEVICE = cpu ] && precs=${precs//tf32/}  # tf32: CUDA only
  if (( SECONDS - T0 > BUDGET )); then echo "skip profiles $precs (time: $((SECONDS - T0)) s)"; return; fi
  echo "== profiles $precs at $((SECONDS - T0)) s"
  timeout $(( 150 * ${TSCALE:-1} )) $PY bench/profile_step.py --model $P/smol-tok --random-llama $SHAPE \
    --train-samples $SAMPLES --max-length 64 --batch-size 64 --precision $precs --steps 10 --warmup 5 \
    --device $DEVICE --out-dir $OUT/prof 2>&1 | grep -E '^\{|Error|error|Traceback'
  echo "   profiles done at $((SECONDS - T0)) s"
}
one() {  # a run by its name: <pac|lora>_<fp32|tf32|bf16|bf16all>_b<batch>, or prof:<precision>,<precision>...
  [[ $1 == prof:* ]] && { profile ${1#prof:}; return; }
  local name=$1 method=${1%%_*} rest=${1#*_}; local prec=${rest%%_*} B=${1##*_b} extra=()
  if [ $prec = bf16all ]; then prec=bf16; extra=(--frozen-cast all); fi
  if [ $prec = tf32 ] && [ $DEVICE = cpu ]; then echo "skip $name (tf32: CUDA only)"; return; fi
  if [ $method = pac ]; then
    run $name 90 --batch-size $B --precision $prec --epochs 5 --variants pac_cache "${extra[@]}"
  else
    run $name $(( B == 16 ? 150 : 100 )) --batch-size $B --precision $prec --epochs 1 --variants lora "${extra[@]}"
  fi
}
ORDER=${ONLY:-"prof:fp32,bf16 pac_fp32_b64 lora_fp32_b64 lora_bf16_b64 pac_bf16_b64 lora_fp32_b16 pac_fp32_b16
  prof:bf16-all,tf32 lora_bf16all_b64 pac_bf16all_b64 lora_tf32_b64 pac_tf32_b64 lora_bf16all_b16 pac_bf16all_b16
  lora_bf16_b16 pac_bf16_b16"}
for name in $ORDER; do one $name; done
date -u
$PY - <<'PY'
import glob, json, math, os
OUT = os.environ.get("OUT", "/tmp/out")
runs = {os.path.basename(f)[:-5]: json.load(open(f)) for f in sorted(glob.glob(OUT + "/runs/*.json"))
        if not os.path.basename(f).startswith("tmp_")}
summary = {"unit": "seconds; lora_5ep_s: 5 x epoch 1 (eager LoRA runs one epoch)"}
for bs in (64, 16):
    row, lora_best = {}, None
    for name, rep in runs.items():
        if not name.endswith(f"_b{bs}"):
            continue
        for variant, r in rep["variants"].items():
            ep, key, loss = r["epoch_times_s"], name[: -len(f"_b{bs}")], r["final_train_loss"]
            item = {"epochs_s": [round(t, 3) for t in ep], "final_loss": loss, "precision": r["precision"],
                    "frozen_cast": r.get("frozen_cast"), "frozen_cast_scope": r.get("frozen_cast_scope"),
                    "tf32": r.get("tf32_matmul")}
            if r["method"] == "lora":
                item["lora_5ep_s"] = 5 * ep[0]
                item["ms_per_step"] = 1e3 * ep[0] / max(r["steps"], 1)
                if math.isfinite(loss) and (lora_best is None or item["lora_5ep_s"] < row[lora_best]["lora_5ep_s"]):
                    lora_best = key
            else:
                item.update(train_s=r["train_time_s"], cached_epoch_s=sum(ep[1:]) / max(len(ep) - 1, 1),
                            phase_s=r.get("phase_s"), fast_path=r.get("fast_path"),
                            bytes_lent_gb=r.get("backbone_bytes_lent_gb"))
            row[key] = item
    if lora_best:
        row["best_lora"] = {"run": lora_best, "lora_5ep_s": row[lora_best]["lora_5ep_s"]}
        for key, item in row.items():
            if "train_s" in item:
                item["speedup_vs_best_lora"] = row[lora_best]["lora_5ep_s"] / item["train_s"]
            if "lora_5ep_s" in item:
                item["speedup_vs_lora_fp32"] = (row.get("lora_fp32", {}).get("lora_5ep_s") or math.nan) / \
                    item["lora_5ep_s"]
    summary[f"batch_{bs}"] = row
prof = glob.glob(OUT + "/prof/*_summary.json")
if prof:
    keep = ("frozen_cast_scope", "ms_per_step_unprofiled", "gpu_busy_ms_per_step", "kernel_launches_per_step", "ops",
            "casts_and_copies", "host_reads", "matmuls_by_input_dtypes", "runtime_calls_in_profile", "losses")
    summary["profile_lora_b64"] = {k: {f: v.get(f) for f in keep} for k, v in json.load(open(prof[0])).items()}
summary["goal"] = "PAC >= 8.64x edgeft's best LoRA (5 epochs) at batch 16 and 64; fill within 3x of frozen bf16 fwd"
json.dump(summary, open(OUT + "/summary.json", "w"), indent=1)
print(json.dumps(summary, indent=1))
PY
tar -czf $OUT/profiles.tar.gz -C $OUT prof && rm -rf $OUT/prof
tar -czf $OUT/runs.tar.gz -C $OUT runs && rm -rf $OUT/runs
ls -la $OUT
echo "== done at $((SECONDS - T0)) s"
