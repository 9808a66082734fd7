# h21 (README, "The same diagnostic on MiniLM-L6's one miss"): LoRA on chosen blocks of MiniLM-L6, SST-2, held-out rows.
set -uo pipefail
OUTD=${OUTD:-bench/results/quality}; W=${W:-/tmp/h21_minilm}; PY=${PY:-.venv/bin/python}
for spec in "top2:4,5" "bottom4:0,1,2,3" "all:"; do
  name=${spec%%:*}; layers=${spec#*:}
  opt=(); [ -n "$layers" ] && opt=(--lora-option "layers=[$layers]")
  echo "[h21 minilm lora $name $(date -u +%H:%M:%S)]"
  $PY bench/quality.py --models minilm-l6 --methods lora --full-models "" --tasks sst2 --seeds 0,1,2 --holdout 500 \
    --threads 1 --jobs 2 "${opt[@]}" --work "$W/$name" --out "$OUTD/h21_lora_${name}_minilm_holdout_cpu.json" \
    --label "issue 15 h21: LoRA on blocks [$layers] (empty: all), minilm-l6, SST-2, held-out training rows" | grep -v ": ok "
done
