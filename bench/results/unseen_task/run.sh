# PAC against LoRA on a task outside the quality suite, as a new user would run it (CPU; one run at a time).
# bash bench/results/unseen_task/run.sh OUT_DIR   (then the JSON is summarised by hand; see README)
set -euo pipefail
D=${1:-/tmp/mc}
python3 bench/results/unseen_task/make_files.py $D
for m in pac lora; do for s in 0 1 2; do
  .venv/bin/edgeft finetune --model minilm-l6 --method $m --data-file $D/cat_train.jsonl --dev-file $D/cat_dev.jsonl \
    --text-column question --label-column kind --epochs 3 --seed $s --out $D/${m}_s$s --overwrite
done; done
