# Issue 15 on one H200 (h7, 2026-12-05; started by session.sh under setsid; results in /root/r): SmolLM2-135M's
# PAC candidates (sweep_smollm2.json: base = today's defaults, 6 epochs; cls = a trained classifier head on the
# causal LM instead of the LM head's label words; tapsall = every block tapped; wide = side width hidden/2) on 500
# held-out TRAINING rows, 6 tasks x 3 train seeds; the rule (quality.py --pick, margin 0.5 over base, the mean over
# the 6 cells); then PAC on dev at the pick (if not base), and the gaps to LoRA's dev cells (h4_device/gaps.py).
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
H=${SWEEP_DIR:-bench/results/h7_device}; N=${NAME:-h7}; PY=${PY:-python3}  # h11: SWEEP_DIR, NAME (session.sh)
R=${R:-/root/r}; W=${W:-/root/w/$N}; mkdir -p "$R" "$W"
if [ "${TINY:-0}" = 1 ]; then SIZE=(--train-samples 32 --dev-samples 16 --seeds 0); HOLD=16; TAG=tiny
else SIZE=(--seeds 0,1,2); HOLD=500; TAG=gpu; fi
Q=($PY bench/quality.py --full-models "" --threads 1 --models smollm2-135m "${SIZE[@]}")
say() { echo "[$N $(date -u +%H:%M:%S) +${SECONDS}s] $*"; }
sweep=$R/${N}_sweep_smollm2_holdout_$TAG.json; chosen=$R/${N}_chosen_smollm2.json
say "held-out sweep"
"${Q[@]}" --holdout $HOLD --sweep $H/sweep_smollm2.json --jobs ${JOBS:-5} --work "$W/sweep" --out "$sweep" \
  --label "issue 15 $N: PAC candidates, smollm2-135m, held-out training rows" | grep -v ": ok "
"${Q[@]}" --pick "$sweep" --pick-out "$chosen" | tail -n 14
label=$($PY -c "import json; print(json.load(open('$chosen'))['chosen'])" 2>/dev/null)
if [ -n "$label" ] && [ "$label" != base ]; then
  say "the rule chose $label; PAC on dev"
  "${Q[@]}" --methods pac --pac-config "$chosen" --jobs ${DEVJOBS:-6} --work "$W/dev" --out "$R/${N}_pac_smollm2_dev_$TAG.json" \
    --label "issue 15 $N: PAC ($label) on dev, smollm2-135m" | grep -v ": ok "
  [ -f "$R/${N}_pac_smollm2_dev_$TAG.json" ] && $PY bench/results/h4_device/gaps.py "$R/${N}_gaps_smollm2_dev_$TAG.json" \
    "$R/${N}_pac_smollm2_dev_$TAG.json" bench/results/quality/h3_lora_smollm2_dev_gpu.json \
    bench/results/quality/h4_lora_smollm2_filerte_dev_gpu.json
fi
say "all done"
touch $R/quality.done
