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
LABEL="issue 18 h9"; RUN_BUDGET=330
source bench/results/pac/device_bench.sh
C+=(--batch-size 64)
echo "== warm-up (untimed)"
timeout 120 $PY bench/pac_vs_baselines.py "${C[@]}" --train-samples 512 --epochs 2 --variants pac_cache,lora \
  --out /tmp/warm.json 2>&1 | grep -E "train |Error"
O=(--pac-option)
SB=("${O[@]}" stream_batch=256)
TF=("${O[@]}" fill_precision=tf32)
S64=("${O[@]}" stream_batch=64)  # the fill's micro-batch when this ran (h9): since h10 CUDA's default is 256
run pac_fp32 90 --precision fp32 --epochs 5 --variants pac_cache "${S64[@]}"  # the code as it stood (h9)
run lora_fp32 120 --precision fp32 --epochs 1 --variants lora
run pac_fp32_sb256_filltf32 90 --precision fp32 --epochs 5 --variants pac_cache "${SB[@]}" "${TF[@]}"
run pac_fp32_sb256 90 --precision fp32 --epochs 5 --variants pac_cache "${SB[@]}"
run pac_fp32_filltf32 90 --precision fp32 --epochs 5 --variants pac_cache "${S64[@]}" "${TF[@]}"
EDGEFT_CHECKSUM_THREADS=1 run pac_fp32_crc1 90 --precision fp32 --epochs 5 --variants pac_cache "${S64[@]}"  # h7's
run pac_fp32_sb256_fillbf16 90 --precision fp32 --epochs 5 --variants pac_cache "${SB[@]}" "${O[@]}" fill_precision=bf16
run pac_tf32 90 --precision tf32 --epochs 5 --variants pac_cache "${S64[@]}"
run lora_tf32 120 --precision tf32 --epochs 1 --variants lora
run pac_fp32_again 90 --precision fp32 --epochs 5 --variants pac_cache "${S64[@]}"
run pac_fp32_sb256_filltf32_b16 90 --precision fp32 --epochs 5 --variants pac_cache --batch-size 16 "${SB[@]}" \
  "${TF[@]}"
timeout 60 $PY bench/fill_agreement.py --model $P/smol-tok --train-samples 1000 --device $DEVICE \
  --out $OUT/r/fill_agreement.json 2>&1 | grep -E "^tf32|^bf16|Error"
if (( SECONDS - T0 < ${BUDGET2:-380} )); then
  timeout 90 $PY bench/frozen_forward.py --model $P/smol-tok --batch-size 64 256 --precision fp32 tf32 bf16 \
    --random-llama ${SHAPE:-smollm2-135m-shape} --train-samples ${SAMPLES:-4000} --device $DEVICE \
    --out $OUT/r/frozen_forward.json 2>&1 | grep -E "forward_s|Error"
fi
summary
echo "== all done at $((SECONDS - T0)) s"; date -u
(cd $OUT && tar czf speed.tgz r && rm -rf r); ls -la $OUT
