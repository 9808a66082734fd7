# The two jobs of session_x.sh (run under setsid there). Results in /root/r.
set -uo pipefail
R=/root/r; W=/root/w; mkdir -p $W
Q=(python3 bench/quality.py --models smollm2-135m --full-models "" --threads 1 --seeds 0,1,2)
case "$1" in
quality)  # issue 15: PAC's SmolLM2 cells on held-out training rows, the rule, then dev; LoRA on dev beside the sweep
  "${Q[@]}" --methods lora --jobs 4 --work $W/final --out $R/h3_lora_smollm2_dev_gpu.json \
    --label "issue 15 LoRA on dev, SmolLM2-135M" > $R/lora.log 2>&1 &
  LORA=$!
  "${Q[@]}" --holdout 500 --sweep bench/results/h3_device/sweep_smollm2.json --jobs 7 --work $W/sweep \
    --out $R/h3_sweep_smollm2_holdout_gpu.json --label "issue 15 PAC side_init/lr, SmolLM2 held-out rows" | grep -v ": ok "
  "${Q[@]}" --pick $R/h3_sweep_smollm2_holdout_gpu.json --pick-out $R/h3_chosen_smollm2.json
  wait $LORA; tail -n 3 $R/lora.log
  for cfg in auto base; do
    python3 - "$R/h3_sweep_smollm2_holdout_gpu.json" $cfg > $R/cfg_$cfg.json <<'PY'
import json, sys
for c in json.load(open("bench/results/h3_device/sweep_smollm2.json")):
    if c["label"] == sys.argv[2]: print(json.dumps(c))
PY
    "${Q[@]}" --methods lora,pac --pac-config $R/cfg_$cfg.json --jobs 12 --work $W/final \
      --out $R/h3_quality_smollm2_dev_${cfg}_gpu.json --label "issue 15 quality suite, dev, SmolLM2-135M, PAC $cfg" | grep -v ": ok "
  done
  touch $R/quality.done ;;
fed)  # issue 19: the Dolly table, every algorithm at the benchmark's own settings (8 rounds), 3 seeds
  python3 bench/fed_quality.py --task dolly --engine inprocess --device cuda --workers 12 --threads 1 --seeds 0 1 2 \
    --algorithms fedkseed fedit fedkseed-pro fwdgrad --out $R/fq
  python3 bench/fed_quality.py --summary-only --out $R/fq
  touch $R/fed.done ;;
esac
