#!/usr/bin/env bash
# Issue 18, one device call (2026-12-04): the cached epochs' fast path (graphs_gpu_session.sh), where bf16 LoRA's
# NaN first appears (bench/bf16_nan_probe.py), and bf16 with the frozen weights stored in bf16 (Precision.cast_frozen).
# Run from the repo root as bash bench/results/pac/issue18_1204/session.sh; sent with carry=[".devcarry/t"] (smol-tok/: SmolLM2's tokenizer files; whl/: pydantic for Python 3.12).
set -u
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export P=$PWD/.devcarry/t OUT=${OUT:-/tmp/out}
T0=$SECONDS
BUDGET=170 bash bench/results/pac/graphs_gpu_session.sh
export PYTHONPATH=/root/site:$PWD/src
mkdir -p bench/nanprobe && ln -sfn $PWD/bench bench/nanprobe/bench && ln -sfn $P/smol-tok bench/nanprobe/smol-tok
echo "== bf16 NaN probe at $((SECONDS - T0)) s"
timeout 70 python3 bench/bf16_nan_probe.py bench/nanprobe --steps 250 2>&1 | grep -v Warning | tail -2 | tee $OUT/bf16_nan_probe.jsonl
C=(--model $P/smol-tok --random-llama smollm2-135m-shape --task sst2 --train-samples 4000 --max-length 64 --seed 0
   --eval none --device cuda)
echo "== bf16 with frozen weights cast once, at $((SECONDS - T0)) s"
timeout 60 python3 bench/pac_vs_baselines.py "${C[@]}" --batch-size 64 --precision bf16 --epochs 1 --variants lora \
  --out $OUT/bf16cast_lora_b64.json 2>&1 | grep -E "train |Error"
timeout 60 python3 bench/pac_vs_baselines.py "${C[@]}" --batch-size 64 --precision bf16 --epochs 5 --variants pac_cache \
  --out $OUT/bf16cast_pac_b64.json 2>&1 | grep -E "train |Error"
echo "== done at $((SECONDS - T0)) s"
