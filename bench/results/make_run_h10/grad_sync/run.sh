# Does the bf16 gradient all-reduce (train.grad_sync, h10) cost make run accuracy? make run's own launch (hybrid PAC
# over the four phones, 1,024 SST-2 rows, 4 epochs, batch 32, lr 2e-3, max length 48) scored on the 500 held-out
# long training rows of ../RULE.md (never dev), grad_sync bf16 and fp32, train seeds 0, 1, 2 (sample seed 0).
# Numerics only, so no compute or link emulation (the numbers a step computes do not depend on it).
#   flock /tmp/edgeft-cpu.lock bash bench/results/make_run_h10/grad_sync/run.sh
# Reused by h11 (../../make_run_h11/launch_heldout/, ../../make_run_h11/dev_seeds/): SEEDS, GRADS, TAG (a name
# prefix), OPTS (more launch words), DEST (where the metrics go) and EVAL (heldout: the 500 long rows; dev: make
# run's own 200 dev sentences) change what runs; the defaults are h10's runs.
set -euo pipefail
W=${W:-/tmp/gs}; mkdir -p $W
SEEDS=${SEEDS:-0 1 2}; GRADS=${GRADS:-bf16 fp32}; TAG=${TAG:-}; OPTS=${OPTS:-}
DEST=${DEST:-bench/results/make_run_h10/grad_sync}; mkdir -p $DEST
if [ "${EVAL:-heldout}" = dev ]; then SCORED=(--dev-samples 200)
else SCORED=(--dev-samples 500 --dev-file $W/heldout_long.jsonl)
.venv/bin/python - $W/heldout_long.jsonl <<'PY'
import argparse, json, sys
sys.path.insert(0, "bench")
import pac_vs_baselines as pb
from edgeft.data import TaskConfig, load_task
task = load_task(TaskConfig(name="sst2", train_samples=1024, dev_samples=8, max_length=48, seed=0))
a = argparse.Namespace(holdout=500, holdout_beyond=1280, holdout_min_words=15, seed=0, task="sst2", max_length=48,
                       dev_file=None, text2_column=None)
with open(sys.argv[1], "w") as f:
    for r in pb.holdout_examples(task, a):
        f.write(json.dumps({"sentence": r["text"], "label": r["label"]}) + "\n")
PY
fi
for S in $SEEDS; do for G in $GRADS; do
  printf 'train:\n  seed: %s\n' $S > $W/seed$S.yaml
  .venv/bin/edgeft launch --config $W/seed$S.yaml --cluster examples/clusters/four-phones.yaml --model smollm2-135m \
    --task sst2 --method pac --strategy hybrid --epochs 4 --train-samples 1024 "${SCORED[@]}" \
    --batch-size 32 --max-length 48 --lr 2e-3 --no-compute-emulation \
    --link-mode none --grad-sync $G $OPTS --out $W/$TAG${G}_s$S --overwrite > $W/$TAG${G}_s$S.log 2>&1
  cp $W/$TAG${G}_s$S/metrics.json $DEST/$TAG${G}_s$S.metrics.json
  echo "$TAG$G seed $S $(grep 'after training' $W/$TAG${G}_s$S.log)"
done; done
