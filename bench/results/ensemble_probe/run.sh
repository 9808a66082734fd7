#!/bin/bash
# One run of the ensemble probe (README.md): pac_vs_baselines at the quality suite's budget on 500 held-out TRAINING
# rows, its final held-out logits kept by probe.py in $DIR (default /tmp/ens).
# usage: bash bench/results/ensemble_probe/run.sh MODEL TASK VARIANT SEED     (VARIANT: pac_cache | lora)
cd "$(dirname "$0")/../../.." || exit 1
m=$1; t=$2; v=$3; s=$4; D=${DIR:-/tmp/ens}; mkdir -p $D
.venv/bin/python bench/results/ensemble_probe/probe.py $D/${m}_${t}_${v}_${s}.json --model $m --task $t \
  --train-samples 1000 --batch-size 16 --max-length 128 --seed 0 --train-seed $s --eval last --device cpu \
  --in-process --threads 1 --holdout 500 --variants $v --epochs 3 --out $D/rep_${m}_${t}_${v}_${s}.json \
  > $D/${m}_${t}_${v}_${s}.log 2>&1
echo done $m $t $v $s $(tail -1 $D/${m}_${t}_${v}_${s}.log)
