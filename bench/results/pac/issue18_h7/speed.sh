#!/usr/bin/env bash
# Issue 18, item 2, every figure from one host in one device call (2026-12-05, session h7): PAC (CUDA graphs over
# the device cache) against each LoRA setting edgeft has (eager fp32/bf16, compiled fp32/bf16 with a cold and then
# a warm inductor cache), batch 64 and 16, and the frozen forward (the fill's floor). Random-weight SmolLM2-135M
# shape, 4,000 SST-2 sentences, max length 64, seed 0, no evaluation. The runs are bench/results/pac/issue18_1205/
# session.sh's (`ONLY=` names), after ONE untimed warm-up process, so that no timed run is the first process on a
# fresh machine (CUDA's module loading, the driver's JIT cache): the same for PAC and LoRA.
#   P=/root/x/t OUT=$OUT bash bench/results/pac/issue18_h7/speed.sh       (P: smol-tok/ and whl/ with pydantic)
# Order: the acceptance figures first (PAC and eager LoRA at 64 and 16), then compiled LoRA cold then warm (its
# best end-to-end case, as a user's second run would have it), then bf16; BUDGET skips what would start too late.
set -u
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export P=${P:-/root/x/t} OUT=${OUT:-/tmp/out} PY=${PY:-python3}
if ! $PY -c "import pydantic" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /root/site ${WHL:-/root/x/whl}/*.whl 2>&1 | tail -1
fi
export PYTHONPATH=/root/site:$PWD/src
S=bench/results/pac/issue18_1205/session.sh
T0=$SECONDS
echo "== warm-up (untimed)"
timeout 120 $PY bench/pac_vs_baselines.py --model $P/smol-tok --random-llama ${SHAPE:-smollm2-135m-shape} --task sst2 \
  --train-samples ${WARM_SAMPLES:-512} --max-length 64 --seed 0 --eval none --device ${DEVICE:-cuda} --batch-size 64 --epochs 2 \
  --variants pac_cache,lora --out /tmp/warm.json 2>&1 | grep -E "train |Error" ; echo "warm-up done at $((SECONDS - T0)) s"
ONLY="pac_fp32_b64 lora_fp32_b64 pac_fp32_b16 lora_fp32_b16 lora_fp32_compile_b64" BUDGET=${BUDGET:-330} bash $S 2>&1 \
  | grep -v '^ *"' | grep -v '^[{}]'
# the same compiled run again: the inductor cache now warm (the FX graph and autotuning caches on disk)
mkdir -p $OUT/w
ONLY="lora_fp32_compile_b64 pac_bf16_b64 lora_bf16_b64" BUDGET=${BUDGET2:-$(( 430 - (SECONDS - T0) ))} OUT=$OUT/w bash $S 2>&1 | grep -v '^ *"' | grep -v '^[{}]'
mv $OUT/w/lora_fp32_compile_b64.json $OUT/lora_fp32_compilewarm_b64.json 2>/dev/null
for f in $OUT/w/pac_bf16_b64.json $OUT/w/lora_bf16_b64.json; do [ -f $f ] && mv $f $OUT/; done
rm -rf $OUT/w
if (( SECONDS - T0 < ${BUDGET3:-480} )); then
  mkdir -p $OUT/ff
  timeout 60 $PY bench/frozen_forward.py --model $P/smol-tok --batch-size 64 16 --random-llama ${SHAPE:-smollm2-135m-shape} --train-samples ${SAMPLES:-4000} --device ${DEVICE:-cuda} --out $OUT/ff/frozen_forward.json 2>&1 | tail -4
fi
# one summary over every run (session.sh's summary, run on the merged folder)
ONLY="" PARTS=none bash $S 2>/dev/null | tail -n 2
echo "== all done at $((SECONDS - T0)) s"
# at most 8 files come back from a device call: every report in one archive, the summary beside it
(cd $OUT && tar czf speed.tgz --exclude=speed.tgz *.json ff && find . -name '*.json' ! -name summary.json -delete && rm -rf ff)
ls -la $OUT
