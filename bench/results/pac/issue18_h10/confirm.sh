#!/usr/bin/env bash
# Issue 18 (h10, 2026-12-05): the batch-64 and batch-16 ratios with PAC as the code now stands (stream_batch's
# default is 256 on CUDA), no PAC option passed: after one untimed warm-up process, PAC b64, LoRA eager fp32
# b64 (1 epoch x 5, edgeft's best LoRA in h7), PAC b16, LoRA b16, both b64 runs again, the frozen forward at b64
# (fp32/bf16), as far as BUDGET/BUDGET2 (seconds) allow.
#   SPEED=bench/results/pac/issue18_h10/confirm.sh bash bench/results/h7_device/session.sh speed
LABEL="issue 18 h10"; RUN_BUDGET=380
source bench/results/pac/device_bench.sh
C+=(--precision fp32)
$PY bench/pac_vs_baselines.py "${C[@]}" --batch-size 64 --train-samples 128 --epochs 1 --variants pac_cache,lora \
  --out /tmp/warm.json 2>&1 | grep -E "Error"; echo "warm-up done at $((SECONDS - T0)) s"
run pac_b64 90 --batch-size 64 --epochs 5 --variants pac_cache
run lora_b64 90 --batch-size 64 --epochs 1 --variants lora
run pac_b16 90 --batch-size 16 --epochs 5 --variants pac_cache
run lora_b16 120 --batch-size 16 --epochs 1 --variants lora
run pac_b64_again 90 --batch-size 64 --epochs 5 --variants pac_cache
run lora_b64_again 90 --batch-size 64 --epochs 1 --variants lora
if (( SECONDS - T0 < ${BUDGET2:-420} )); then
  timeout 60 $PY bench/frozen_forward.py --model $P/smol-tok --batch-size 64 --precision fp32 bf16 \
    --random-llama ${SHAPE:-smollm2-135m-shape} --train-samples ${SAMPLES:-4000} --device $DEVICE \
    --out $OUT/r/frozen_forward.json 2>&1 | grep -E "forward_s|Error"
fi
summary
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
tar czf $OUT/confirm.tgz -C $OUT r && rm -rf $OUT/r
echo "== all done at $((SECONDS - T0)) s"; date -u
