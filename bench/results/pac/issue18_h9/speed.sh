#!/usr/bin/env bash
# Issue 18, batch 64 (session h9, 2026-12-05), one device call: where PAC's epoch 1 goes and which lever shortens it.
# PAC at batch 64 as the code stands (threaded cache checksums), then each lever: fill micro-batches of 256 instead
# of 64 (PAC's stream_batch; the fill is launch-bound), a fill with TF32 products (fill_precision=tf32: the cache
# keeps int8 codes), both, one checksum thread (h7's code), a bf16 fill, the whole run in TF32; LoRA eager fp32 and
# tf32 on the same host (edgeft's best LoRA on h7's host was eager fp32); the frozen forward at batch 64 and 256 in
# fp32/tf32/bf16; bench/fill_agreement.py (the int8 codes of a TF32 and a bf16 fill against an fp32 fill).
# Same settings as issue18_h7: random-weight SmolLM2-135M shape, 4,000 SST-2 sentences, max length 64, seed 0,
# no evaluation, PAC 5 epochs, LoRA 1 epoch (x 5), after one untimed warm-up process.
#   bash bench/results/h7_device/session.sh speed   with this script in place of issue18_h7/speed.sh, or directly:
#   P=/root/x/t OUT=$OUT bash bench/results/pac/issue18_h9/speed.sh     (P: smol-tok/; pydantic on PYTHONPATH)
set -u
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
P=${P:-/root/x/t}; OUT=${OUT:-/tmp/out}; PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}
export PYTHONPATH=/root/site:$PWD/src
mkdir -p $OUT/r
C=(--model $P/smol-tok --random-llama ${SHAPE:-smollm2-135m-shape} --task sst2 --max-length 64 --seed 0 --eval none
   --device $DEVICE --batch-size 64)
T0=$SECONDS
echo "== warm-up (untimed)"
timeout 120 $PY bench/pac_vs_baselines.py "${C[@]}" --train-samples 512 --epochs 2 --variants pac_cache,lora \
  --out /tmp/warm.json 2>&1 | grep -E "train |Error"
run() {  # name timeout args...
  local name=$1 limit=$2; shift 2
  if (( SECONDS - T0 > ${BUDGET:-330} )); then echo "skip $name at $((SECONDS - T0)) s"; return; fi
  timeout $limit $PY bench/pac_vs_baselines.py "${C[@]}" --train-samples ${SAMPLES:-4000} "$@" \
    --out $OUT/r/$name.json --label "issue 18 h9 $name" 2>&1 | grep -E "Error|Traceback" | head -3
  rm -f $OUT/r/$name.png; echo "   $name done at $((SECONDS - T0)) s"
}
O=(--pac-option)
SB=("${O[@]}" stream_batch=256)
TF=("${O[@]}" fill_precision=tf32)
run pac_fp32 90 --precision fp32 --epochs 5 --variants pac_cache          # the code as it stands (threaded checksums)
run lora_fp32 120 --precision fp32 --epochs 1 --variants lora
run pac_fp32_sb256_filltf32 90 --precision fp32 --epochs 5 --variants pac_cache "${SB[@]}" "${TF[@]}"
run pac_fp32_sb256 90 --precision fp32 --epochs 5 --variants pac_cache "${SB[@]}"
run pac_fp32_filltf32 90 --precision fp32 --epochs 5 --variants pac_cache "${TF[@]}"
EDGEFT_CHECKSUM_THREADS=1 run pac_fp32_crc1 90 --precision fp32 --epochs 5 --variants pac_cache      # h7's code
run pac_fp32_sb256_fillbf16 90 --precision fp32 --epochs 5 --variants pac_cache "${SB[@]}" "${O[@]}" fill_precision=bf16
run pac_tf32 90 --precision tf32 --epochs 5 --variants pac_cache
run lora_tf32 120 --precision tf32 --epochs 1 --variants lora
run pac_fp32_again 90 --precision fp32 --epochs 5 --variants pac_cache
run pac_fp32_sb256_filltf32_b16 90 --precision fp32 --epochs 5 --variants pac_cache --batch-size 16 "${SB[@]}" \
  "${TF[@]}"
timeout 60 $PY bench/fill_agreement.py --model $P/smol-tok --train-samples 1000 --device $DEVICE \
  --out $OUT/r/fill_agreement.json 2>&1 | grep -E "^tf32|^bf16|Error"
if (( SECONDS - T0 < ${BUDGET2:-380} )); then
  timeout 90 $PY bench/frozen_forward.py --model $P/smol-tok --batch-size 64 256 --precision fp32 tf32 bf16 \
    --random-llama ${SHAPE:-smollm2-135m-shape} --train-samples ${SAMPLES:-4000} --device $DEVICE \
    --out $OUT/r/frozen_forward.json 2>&1 | grep -E "forward_s|Error"
fi
$PY - $OUT/r <<'PY'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("*.json")):
    if f.name in ("frozen_forward.json", "fill_agreement.json"):
        continue
    for name, v in json.loads(f.read_text())["variants"].items():
        print(f"{f.stem:18s} {v['train_time_s']:7.2f} s  epochs {[round(e, 2) for e in v['epoch_times_s']]}"
              f"  {v.get('phase_s', '')}  loss {v.get('final_train_loss')}")
PY
echo "== all done at $((SECONDS - T0)) s"; date -u
(cd $OUT && tar czf speed.tgz r && rm -rf r); ls -la $OUT
