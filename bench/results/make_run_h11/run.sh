# make run's learner on held-out long training rows (RULE.md): 5 candidates x 5 train seeds, one device, CPU.
#   flock /tmp/edgeft-cpu.lock bash bench/results/make_run_h11/run.sh
set -uo pipefail
D=bench/results/make_run_h11
one() {  # name epochs lr seed [pac options...]
  local name=$1 ep=$2 lr=$3 s=$4; shift 4
  local opts=(); for o in "$@"; do opts+=(--pac-option "$o"); done
  .venv/bin/python bench/pac_vs_baselines.py --model smollm2-135m --task sst2 --train-samples 1024 --epochs $ep \
    --batch-size 32 --max-length 48 --lr pac=$lr --seed 0 --train-seed $s --holdout 500 --holdout-beyond 1280 \
    --holdout-min-words 15 --variants pac_cache --eval last --threads 1 --in-process "${opts[@]}" \
    --out $D/${name}_seed$s.json > $D/${name}_seed$s.log 2>&1
  echo "$name seed=$s $(python3 -c "import json;print(json.load(open('$D/${name}_seed$s.json'))['variants']['pac_cache']['dev_metric'])")"
}
export -f one; export D
for S in 0 1 2 3 4; do
  printf '%s\n' "base 4 2e-3 $S" "nodrop 4 2e-3 $S dropout=0" "h0_ep8 8 2e-3 $S heads=0" \
    "h0_ep8_lr4e-3 8 4e-3 $S heads=0" "h0_ep12 12 2e-3 $S heads=0"
done | xargs -P 2 -L 1 bash -c 'one "$@"' _
