# h26 fourth call (README, part 5): does memory pressure make deterministic runs part? 12 processes at once, MRPC
# seed 1, PAC graphed once (g1), --deterministic, every step's loss kept; 6 with PyTorch's allocator capped at 1.8% of
# the GPU (~1.4 GB; the run's peak is 1.19 GB, so the allocator frees its cache and retries), 6 without.
set -uo pipefail
source bench/results/h25_device/device_env.sh
W=/root/w/h26p; mkdir -p $R/press $W
CAPS=(${CAPS:-0.018})  # fractions of the GPU for processes 1-6, in turn (the first call: 0.018 for all)
echo '[{"label": "g1", "options": {}}]' > $W/sweep.json
for i in $(seq 1 12); do
  cap=0; [ $i -le 6 ] && cap=${CAPS[$(( (i - 1) % ${#CAPS[@]} ))]}
  python3 - $cap bench/pac_vs_baselines.py --model smollm2-135m --train-samples 1000 --batch-size 16 --max-length 128 \
    --seed 0 --train-seed 1 --eval last --device auto --in-process --out $R/press/mrpc_s1_cap${cap}_p$i.json \
    --label "h26 pressure: cap $cap process $i" --task mrpc --dev-samples 500 --threads 1 --variants "" \
    --sweep $W/sweep.json --epochs 10 --keep-losses --deterministic > $W/p$i.log 2>&1 <<'PY' &
import runpy, sys, torch
cap = float(sys.argv[1])
if cap:
    torch.cuda.set_per_process_memory_fraction(cap)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
PY
done
wait; date -u
python3 - $R/press/*.json <<'PY' | tee $R/press_read.txt
import json, sys
runs = {p.rsplit("/", 1)[-1]: json.load(open(p))["variants"] for p in sorted(sys.argv[1:])}
ref = next(v for k, v in runs.items() if "cap0_" in k)
ref = next(iter(ref.values()))["losses"]
for name, v in runs.items():
    r = next(iter(v.values()))
    step = next((i for i, (a, b) in enumerate(zip(ref, r["losses"])) if a != b), None)
    print(name, "same as the first uncapped" if step is None else f"parts at step {step}", round(r["dev_metric"], 6))
PY
grep -l "Error" $W/*.log | head; tail -2 $W/p1.log
