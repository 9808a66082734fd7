# How often does make run clear 0.80? Its launch (dropout 0, bf16 gradients; numerics only: no compute or link
# emulation, which change no number a step computes) on its 200 dev sentences, train seeds 0-4. A report of the
# shipped setting after the choice, not a selection: nothing is chosen from these figures.
#   flock /tmp/edgeft-cpu.lock bash bench/results/make_run_h11/dev_seeds/run.sh
set -euo pipefail
W=${W:-/tmp/devseeds}; D=bench/results/make_run_h11/dev_seeds; mkdir -p $W
for S in 0 1 2 3 4; do
  printf 'train:\n  seed: %s\n' $S > $W/seed$S.yaml
  .venv/bin/edgeft launch --config $W/seed$S.yaml --cluster examples/clusters/four-phones.yaml --model smollm2-135m \
    --task sst2 --method pac --strategy hybrid --epochs 4 --train-samples 1024 --dev-samples 200 --batch-size 32 \
    --max-length 48 --lr 2e-3 --option dropout=0 --no-compute-emulation --link-mode none --out $W/s$S --overwrite \
    > $W/s$S.log 2>&1
  cp $W/s$S/metrics.json $D/s$S.metrics.json
  echo "seed $S $(grep 'after training' $W/s$S.log)"
done
