# h17 (README): end-to-end training time at the quality suite's own settings, one process after the other on this
# GPU: SmolLM2-135M, SST-2, 1,000 rows, batch 16, max length 128, seed 0; LoRA at the suite's 3 epochs, then PAC at
# its 10 (today's defaults), then PAC at the sweep's pick if it is not base. Earlier speed checks (h14) timed both at
# 5 epochs and length 64; the acceptance compares the budgets the suite gives each method.
set -uo pipefail
R=${R:-/root/r}; PY=${PY:-python3}; N=${NAME:-h17}
B=($PY bench/pac_vs_baselines.py --model smollm2-135m --task sst2 --train-samples 1000 --batch-size 16
   --max-length 128 --seed 0 --eval last --device cuda)
"${B[@]}" --variants lora --epochs 3 --out $R/${N}_speed_lora_gpu.json --label "$N: LoRA at the suite's 3 epochs" \
  > $R/${N}_speed_lora.log 2>&1; tail -n 6 $R/${N}_speed_lora.log
"${B[@]}" --variants pac_cache --epochs 10 --out $R/${N}_speed_pac_gpu.json \
  --label "$N: PAC at today's defaults, 10 epochs" > $R/${N}_speed_pac.log 2>&1; tail -n 6 $R/${N}_speed_pac.log
opts=$($PY -c "import json; d=json.load(open('$R/${N}_chosen_smollm2.json')); print(' '.join(f'--pac-option {k}={v}' for k, v in d['options'].items()) if d['chosen'] != 'base' else '')")
if [ -n "$opts" ]; then
  "${B[@]}" --variants pac_cache --epochs 10 $opts --out $R/${N}_speed_pick_gpu.json --label "$N: PAC at the pick" \
    > $R/${N}_speed_pick.log 2>&1; tail -n 6 $R/${N}_speed_pick.log
fi
$PY - <<PY
import json, os
times = {}
for f in ["$R/${N}_speed_lora_gpu.json", "$R/${N}_speed_pac_gpu.json", "$R/${N}_speed_pick_gpu.json"]:
    if os.path.exists(f):
        (r,) = json.load(open(f))["variants"].values()
        times[os.path.basename(f)] = r["train_time_s"]
        print(os.path.basename(f), r["train_time_s"], "s", r["epoch_times_s"], "dev", r["dev_metric"])
lora = times.get("${N}_speed_lora_gpu.json")
for k, v in times.items():
    if lora and ("pac" in k or "pick" in k):
        print(k, "LoRA / PAC = %.2fx" % (lora / v))
PY
