# make run's epochs on held-out training rows (RULE.md): 3 candidates x 3 train seeds, one device, CPU.
#   flock /tmp/edgeft-cpu.lock bash bench/results/make_run_h5/run.sh
set -euo pipefail
D=bench/results/make_run_h5
for E in 4 5 6; do for S in 0 1 2; do
  .venv/bin/python bench/pac_vs_baselines.py --model smollm2-135m --task sst2 --train-samples 1024 --epochs $E \
    --batch-size 32 --max-length 48 --lr pac=2e-3 --seed 0 --train-seed $S --holdout 400 --variants pac_cache \
    --eval last --threads 2 --in-process --out $D/ep${E}_seed$S.json > $D/ep${E}_seed$S.log 2>&1
  echo "E=$E seed=$S $(python3 -c "import json;print(json.load(open('$D/ep${E}_seed$S.json'))['variants']['pac_cache']['dev_metric'])")"
done; done
