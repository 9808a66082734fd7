# h24, second call (README): where does the one differing dev cell (CoLA seed 1) come from? 16 processes at once on
# dev (500 rows, as quality.py runs it), each running the graphed step twice (g1 g2) then the eager step twice
# (e1 e2), every step's loss kept: CoLA seed 1 in 8 processes, SST-2 seed 0 and RTE seed 0 in 4 each.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
N=${N:-repeat}  # h25 reuses this script as repeat2 (N=repeat2)
R=${R:-/root/r}; W=${W:-/root/w/h24$N}; mkdir -p "$R/$N" "$W"
python3 -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
cells=(cola:1 cola:1 cola:1 cola:1 cola:1 cola:1 cola:1 cola:1 sst2:0 sst2:0 sst2:0 sst2:0 rte:0 rte:0 rte:0 rte:0)
i=0
for c in "${cells[@]}"; do
  task=${c%:*}; s=${c#*:}; i=$((i + 1))
  python3 bench/pac_vs_baselines.py --model smollm2-135m --train-samples 1000 --batch-size 16 --max-length 128 \
    --seed 0 --train-seed $s --eval last --device auto --in-process --out $R/$N/${task}_s${s}_p$i.json \
    --label "$N: $task seed $s process $i" --task $task --dev-samples 500 --threads 1 --variants "" \
    --sweep bench/results/h24_device/sweep_repeat.json --epochs 10 --keep-losses > $W/${task}_s${s}_p$i.log 2>&1 &
done
wait
python3 bench/results/h24_device/repeat_read.py $R/$N/*.json | tee $R/${N}_read.txt
touch $R/$N.done
