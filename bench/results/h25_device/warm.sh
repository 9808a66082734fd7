# h25 (README): SmolLM2-135M, SST-2 and RTE, 500 held-out TRAINING rows, train seeds 0-2. Per cell, PAC at HEAD's
# defaults (the suite's budget: 1,000 rows, 10 epochs, batch 16, max length 128) on four backbones written by
# lowwarm.py: copy (the backbone as it is), local1 / local3 (LoRA on blocks 0-3 cut out with a linear classifier,
# 1 or 3 epochs), full1 (LoRA on blocks 0-3 of the whole model, 1 epoch). Twelve processes (cell x half); with them
# LoRA at the suite's budget on seed 0 of each task, for the warm step's time against LoRA's under the same load.
# CPU fallback (README): PY=.venv/bin/python SEEDS="0 1" HALVES=a LORA= T=2 SERIAL=1 R=... W=... bash warm.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=${R:-/root/r}; W=${W:-/root/w/h25}; mkdir -p "$R/h25" "$W"
PY=${PY:-python3}; SEEDS=${SEEDS:-0 1 2}; HALVES=${HALVES:-a b}; LORA=${LORA-3}; T=${T:-1}
D=bench/results/h25_device
one() {  # task seed mode blocks epochs
  local task=$1 s=$2 mode=$3 k=$4 e=$5 name=${1}_s${2}_${3}${5}
  $PY $D/lowwarm.py --task $task --train-seed $s --mode $mode --blocks $k --epochs $e --out $W/$name \
    --report $R/h25/${name}_warm.json > $W/${name}_warm.log 2>&1 || { echo "warm $name failed"; return; }
  $PY bench/pac_vs_baselines.py --model $W/$name --train-samples 1000 --batch-size 16 --max-length 128 \
    --seed 0 --train-seed $s --eval last --device auto --holdout 500 --task $task --threads $T --variants pac_cache \
    --epochs 10 --out $R/h25/${name}_pac.json --label "h25: PAC on $name" > $W/${name}_pac.log 2>&1 \
    || echo "pac $name failed"
  rm -rf $W/$name
  echo "[h25 $name $(date -u +%H:%M:%S)]"
}
half() {  # task seed a|b
  if [ $3 = a ]; then one $1 $2 copy 4 0; one $1 $2 local 4 1; else one $1 $2 local 4 3; one $1 $2 full 4 1; fi
}
for task in ${TASKS:-sst2 rte}; do
  for s in $SEEDS; do
    for h in $HALVES; do
      if [ -n "${SERIAL:-}" ]; then half $task $s $h; else half $task $s $h & fi
    done
  done
  [ -z "$LORA" ] || $PY bench/pac_vs_baselines.py --model smollm2-135m --train-samples 1000 --batch-size 16 \
    --max-length 128 --seed 0 --train-seed 0 --eval last --device auto --holdout 500 --task $task --threads $T \
    --variants lora --epochs $LORA --out $R/h25/${task}_s0_lora.json --label "h25: LoRA $task seed 0" \
    > $W/${task}_lora.log 2>&1 &
done
wait
$PY $D/warm_read.py $R/h25 | tee $R/h25_read.txt
touch $R/h25.done
