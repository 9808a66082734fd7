# h21, second machine (README, "Did the whole-step graph move PAC's accuracy?"): started under setsid after the
# wheel is assembled (session.sh go with this sweep); PAC on dev at HEAD's defaults beside a held-out sweep of the
# whole-step CUDA graph on and off. Touches $R/second.done.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=${R:-/root/r}; W=${W:-/root/w/h21b}; PY=${PY:-python3}; mkdir -p "$R" "$W"
Q=($PY bench/quality.py --full-models "" --threads 1 --models smollm2-135m --seeds 0,1,2)
"${Q[@]}" --methods pac --jobs 8 --work "$W/dev" --out "$R/h21_pac_smollm2_dev_gpu.json" \
  --label "issue 15 h21: PAC at HEAD's defaults on dev, smollm2-135m" > $R/dev.log 2>&1 &
"${Q[@]}" --holdout 500 --sweep bench/results/h21_device/sweep_graphs.json --jobs 8 --work "$W/graphs" \
  --out "$R/h21_graphs_smollm2_holdout_gpu.json" \
  --label "issue 15 h21: PAC with and without the whole-step CUDA graph, smollm2-135m, held-out" > $R/graphs.log 2>&1
wait
[ -f "$R/h21_pac_smollm2_dev_gpu.json" ] && $PY bench/results/h4_device/gaps.py "$R/h21_gaps_smollm2_dev_gpu.json" \
  "$R/h21_pac_smollm2_dev_gpu.json" bench/results/quality/h3_lora_smollm2_dev_gpu.json \
  bench/results/quality/h4_lora_smollm2_filerte_dev_gpu.json > $R/gaps.log 2>&1
touch $R/second.done
