#!/usr/bin/env bash
# Issue 18 (h9), the shortest useful device call when little device time is left: a small warm-up, then PAC at
# batch 64 as the code stood (stream_batch 64), LoRA eager fp32, PAC with both fill levers (stream_batch=256,
# fill_precision=tf32), and the fill agreement check; each report written straight into $OUT so that a call cut
# short keeps what finished.
# Same settings as speed.sh.   bash bench/results/h7_device/session.sh speed  with SPEED=this file
LABEL="issue 18 h9"; RUN_BUDGET=0  # run() is not used here: each report goes straight into $OUT
source bench/results/pac/device_bench.sh
C+=(--batch-size 64)
$PY bench/pac_vs_baselines.py "${C[@]}" --train-samples 128 --epochs 1 --variants pac_cache,lora --out /tmp/warm.json \
  2>&1 | grep -E "Error" ; echo "warm-up done at $((SECONDS - T0)) s"
one() {  # name args...
  local name=$1; shift
  $PY bench/pac_vs_baselines.py "${C[@]}" --train-samples ${SAMPLES:-4000} "$@" --out $OUT/$name.json \
    --label "issue 18 h9 $name" 2>&1 | grep -E "Error|Traceback" | head -3
  rm -f $OUT/$name.png
  $PY -c "import json,sys; v=list(json.load(open('$OUT/$name.json'))['variants'].values())[0]; print('$name', round(v['train_time_s'],2), [round(e,2) for e in v['epoch_times_s']], v.get('phase_s'))" 2>/dev/null
  echo "   $name done at $((SECONDS - T0)) s"
}
one pac_fp32 --precision fp32 --epochs 5 --variants pac_cache --pac-option stream_batch=64  # h9's default
one lora_fp32 --precision fp32 --epochs 1 --variants lora
one pac_fp32_sb256_filltf32 --precision fp32 --epochs 5 --variants pac_cache --pac-option stream_batch=256 \
  --pac-option fill_precision=tf32
$PY bench/fill_agreement.py --model $P/smol-tok --train-samples 1000 --choices tf32 --device $DEVICE \
  --out $OUT/fill_agreement.json 2>&1 | grep -E "^tf32|Error"
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null; date -u
