# Sourced by issue 18's device scripts (issue18_h9/speed.sh and short.sh, issue18_h10/confirm.sh): the environment,
# the arguments every bench/pac_vs_baselines.py run shares (C; a script appends its batch or precision), the clock
# (T0), and two helpers. Set LABEL (the reports' label prefix) and RUN_BUDGET (seconds) before sourcing.
#   run NAME TIMEOUT ARGS...   one pac_vs_baselines.py process into $OUT/r/NAME.json, skipped once $BUDGET (default
#                              RUN_BUDGET) seconds have passed since T0
#   summary                    one line per report in $OUT/r (train time, epochs, PAC's phases, final loss)
set -u
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
P=${P:-/root/x/t}; OUT=${OUT:-/tmp/out}; PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}
export PYTHONPATH=/root/site:$PWD/src
mkdir -p $OUT/r
C=(--model $P/smol-tok --random-llama ${SHAPE:-smollm2-135m-shape} --task sst2 --max-length 64 --seed 0 --eval none
   --device $DEVICE)
T0=$SECONDS
run() {  # name timeout args...
  local name=$1 limit=$2; shift 2
  if (( SECONDS - T0 > ${BUDGET:-$RUN_BUDGET} )); then echo "skip $name at $((SECONDS - T0)) s"; return; fi
  timeout $limit $PY bench/pac_vs_baselines.py "${C[@]}" --train-samples ${SAMPLES:-4000} "$@" \
    --out $OUT/r/$name.json --label "$LABEL $name" 2>&1 | grep -E "Error|Traceback" | head -3
  rm -f $OUT/r/$name.png; echo "   $name done at $((SECONDS - T0)) s"
}
summary() {
  $PY - $OUT/r <<'PY'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("*.json")):
    for name, v in json.loads(f.read_text()).get("variants", {}).items():  # the frozen forward's and the
        print(f"{f.stem:18s} {v['train_time_s']:7.2f} s  epochs {[round(e, 2) for e in v['epoch_times_s']]}"
              f"  {v.get('phase_s', '')}  loss {v.get('final_train_loss')}")  # agreement check's have none
PY
}
