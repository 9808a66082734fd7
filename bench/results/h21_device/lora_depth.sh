# h21 (README): LoRA on some blocks only (LoRA option `layers`), SmolLM2-135M, SST-2 and RTE, 500 held-out TRAINING
# rows, train seeds 0-2, the quality suite's budget (1,000 rows, 3 epochs, batch 16, max length 128, lr 5e-4).
# A diagnostic that chooses nothing: how much of LoRA's accuracy needs changes in the blocks a cache leaves as they are.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=${R:-/root/r}; W=${W:-/root/w/h21lora}; PY=${PY:-python3}; mkdir -p "$R" "$W"
Q=($PY bench/quality.py --full-models "" --threads 1 --models smollm2-135m --methods lora --tasks sst2,rte
   --seeds 0,1,2 --holdout 500 --jobs ${LJOBS:-5})
for spec in "top2:28,29" "top10:20,21,22,23,24,25,26,27,28,29" "bottom20:$(seq -s, 0 19)" "top6:24,25,26,27,28,29" "all:"; do
  name=${spec%%:*}; layers=${spec#*:}
  opt=(); [ -n "$layers" ] && opt=(--lora-option "layers=[$layers]")
  echo "[h21 lora $name $(date -u +%H:%M:%S)]"
  "${Q[@]}" "${opt[@]}" --work "$W/$name" --out "$R/h21_lora_${name}_smollm2_holdout_gpu.json" \
    --label "issue 15 h21: LoRA on blocks [$layers] (empty: all), smollm2-135m, held-out training rows" | grep -v ": ok "
done
echo "[h21 lora done $(date -u +%H:%M:%S)]"
touch $R/lora.done
