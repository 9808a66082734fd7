# h14 (README): PAC against LoRA, end to end, one process after the other on this GPU (SmolLM2-135M, SST-2, 1,000
# rows, 5 epochs, batch 16, max length 64, seed 0): today's defaults, then PAC at the sweep's pick if it is not base.
set -uo pipefail
R=${R:-/root/r}; PY=${PY:-python3}; N=${NAME:-h14}  # h16 reuses it with NAME=h16
B=($PY bench/pac_vs_baselines.py --model smollm2-135m --task sst2 --train-samples 1000 --epochs 5 --batch-size 16
   --max-length 64 --seed 0 --eval last --device cuda)
"${B[@]}" --variants lora,pac_cache --out $R/${N}_speed_defaults_gpu.json --label "$N: speed at the new defaults" \
  > $R/${N}_speed_defaults.log 2>&1; tail -n 8 $R/${N}_speed_defaults.log
opts=$($PY -c "import json; d=json.load(open('$R/${N}_chosen_smollm2.json')); print(' '.join(f'--pac-option {k}={v}' for k, v in d['options'].items()) if d['chosen'] != 'base' else '')")
if [ -n "$opts" ]; then
  "${B[@]}" --variants pac_cache $opts --out $R/${N}_speed_pick_gpu.json --label "$N: speed at the pick" \
    > $R/${N}_speed_pick.log 2>&1; tail -n 8 $R/${N}_speed_pick.log
fi
