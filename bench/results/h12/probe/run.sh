# Sanity probe of out_scale=stream on make run's one-device proxy (h11's rows and budget; not a selection):
#   flock /tmp/edgeft-cpu.lock bash bench/results/h12/probe/run.sh
set -uo pipefail
D=bench/results/h12/probe
one() {  # name lr seed [pac options...]
  local name=$1 lr=$2 s=$3; shift 3
  local opts=(); for o in "$@"; do opts+=(--pac-option "$o"); done
  .venv/bin/python bench/pac_vs_baselines.py --model smollm2-135m --task sst2 --train-samples 1024 --epochs 4 \
    --batch-size 32 --max-length 48 --lr pac=$lr --seed 0 --train-seed $s --holdout 500 --holdout-beyond 1280 \
    --holdout-min-words 15 --variants pac_cache --eval last --threads 1 --in-process "${opts[@]}" \
    --out $D/${name}_seed$s.json > $D/${name}_seed$s.log 2>&1
  echo "$name seed=$s $(python3 -c "import json;print(json.load(open('$D/${name}_seed$s.json'))['variants']['pac_cache']['dev_metric'])")"
}
export -f one; export D
for S in ${SEEDS:-0 1}; do
  printf '%s\n' "stream 2e-3 $S out_scale=stream" "stream_lr5e-4 5e-4 $S out_scale=stream"
done | xargs -P 2 -L 1 bash -c 'one "$@"' _
