# h20 (README): LoRA 3 epochs vs PAC 10 on main, one call, twice: train time and peak memory.
set -uo pipefail
X=/root/x; mkdir -p $X /root/site
cp -r .devcarry/slim/. $X/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site $X/whl/*.whl
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 EDGEFT_HOME=/root/eh PYTHONPATH=/root/site:$PWD/src
for rep in 1 2; do
  for v in lora:3 pac_cache:10; do
    python3 bench/pac_vs_baselines.py --model $X/t/smol-tok --random-llama smollm2-135m-shape --task sst2 \
      --train-samples 1000 --batch-size 16 --max-length 128 --seed 0 --eval none --device cuda \
      --variants ${v%:*} --epochs ${v#*:} --out $OUT/h20_${v%:*}_$rep.json --label "h20: ${v%:*}, rep $rep" \
      > $OUT/h20_${v%:*}_$rep.log 2>&1 || tail -n 20 $OUT/h20_${v%:*}_$rep.log
  done
done
python3 - <<PY
import json
for rep in (1, 2):
    r = {v: next(iter(json.load(open(f"$OUT/h20_{v}_{rep}.json"))["variants"].values())) for v in ("lora", "pac_cache")}
    lo, pa = r["lora"], r["pac_cache"]
    print(f"rep {rep}: LoRA {lo['train_time_s']:.2f} s {lo['peak_memory_mb']:.0f} MB | PAC {pa['train_time_s']:.2f} s "
          f"{pa['peak_memory_mb']:.0f} MB epochs {[round(e, 3) for e in pa['epoch_times_s']]} | "
          f"{lo['train_time_s'] / pa['train_time_s']:.2f}x, memory {100 * (1 - pa['peak_memory_mb'] / lo['peak_memory_mb']):.0f}% less")
PY
date -u
