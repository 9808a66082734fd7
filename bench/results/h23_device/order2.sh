# h23, fifth call: 15 processes at once (h22's load), each running the graphed step three times (g1 g2 g3), every
# step's loss kept; SST-2, CoLA, MRPC x seeds 0-4; the process's H23_MODE (patched_run.py) cycles old/default/sync.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=${R:-/root/r}; W=${W:-/root/w/h23b}; mkdir -p "$R/order2" "$W"
modes=(old default sync); i=0
for task in sst2 cola mrpc; do for s in 0 1 2 3 4; do
  m=${modes[$((i % 3))]}; i=$((i + 1))
  H23_MODE=$m python3 bench/results/h23_device/patched_run.py --model smollm2-135m --train-samples 1000 \
    --batch-size 16 --max-length 128 --seed 0 --train-seed $s --eval last --device auto --in-process \
    --out $R/order2/${m}_${task}_s$s.json --label "h23 repeat: $m $task seed $s" --task $task --holdout 500 \
    --threads 1 --variants "" --sweep bench/results/h23_device/sweep_repeat.json --epochs 10 --keep-losses \
    > $W/${m}_${task}_s$s.log 2>&1 &
done; done
wait
python3 bench/results/h23_device/order_read.py $R/order2/*.json | tee $R/order2_read.txt
