# make run's budget on held-out long training rows (RULE.md): 5 candidates x 3 train seeds, one device, CPU.
#   flock /tmp/edgeft-cpu.lock bash bench/results/make_run_h10/run.sh
set -uo pipefail
D=bench/results/make_run_h10
one() {  # name rows epochs lr seed
  .venv/bin/python bench/pac_vs_baselines.py --model smollm2-135m --task sst2 --train-samples $2 --epochs $3 \
    --batch-size 32 --max-length 48 --lr pac=$4 --seed 0 --train-seed $5 --holdout 500 --holdout-beyond 1280 \
    --holdout-min-words 15 --variants pac_cache --eval last --threads 1 --in-process \
    --out $D/$1_seed$5.json > $D/$1_seed$5.log 2>&1
  echo "$1 seed=$5 $(python3 -c "import json;print(json.load(open('$D/$1_seed$5.json'))['variants']['pac_cache']['dev_metric'])")"
}
export -f one; export D
for S in 0 1 2; do
  printf '%s\n' "base 1024 4 2e-3 $S" "lr4e-3 1024 4 4e-3 $S" "ep5 1024 5 2e-3 $S" "ep6_lr3e-3 1024 6 3e-3 $S" \
    "rows1280 1280 4 2e-3 $S"
done | xargs -P 2 -L 1 bash -c 'one "$@"' _
