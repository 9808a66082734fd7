# How often does make run clear 0.80? Its launch (dropout 0, bf16 gradients; numerics only: no compute or link
# emulation, which change no number a step computes) on its 200 dev sentences, train seeds 0-4. A report of the
# shipped setting after the choice, not a selection: nothing is chosen from these figures. h10's launch script runs
# it (bf16_s<seed>.metrics.json here).
#   flock /tmp/edgeft-cpu.lock bash bench/results/make_run_h11/dev_seeds/run.sh
SEEDS="0 1 2 3 4" GRADS=bf16 EVAL=dev OPTS="--option dropout=0" DEST=bench/results/make_run_h11/dev_seeds \
  W=${W:-/tmp/devseeds} exec bash bench/results/make_run_h10/grad_sync/run.sh
