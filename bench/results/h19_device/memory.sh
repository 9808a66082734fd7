# h19 (README): main's whole-step graphs against this branch's (one pool, one warm-up stream): time and peak memory.
set -uo pipefail
X=/root/x; R=/root/r; mkdir -p $X /root/site $R
cp -r .devcarry/slim/. $X/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site $X/whl/*.whl
ln -sfn $PWD/src/edgeft/datasets .devcarry/main/src/edgeft/datasets
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 EDGEFT_HOME=/root/eh
run() {  # run <main|branch> <rep>
  local root=$PWD; [ $1 = main ] && root=$PWD/.devcarry/main
  PYTHONPATH=/root/site:$root/src python3 $root/bench/pac_vs_baselines.py --model $X/t/smol-tok \
    --random-llama smollm2-135m-shape --task sst2 --train-samples 1000 --batch-size 16 --max-length 128 --seed 0 \
    --eval none --device cuda --variants pac_cache --epochs 10 --out $R/h19_$1_$2.json \
    --label "h19: $1, rep $2" > $R/h19_$1_$2.log 2>&1 || tail -n 20 $R/h19_$1_$2.log
}
for rep in 1 2; do run main $rep; run branch $rep; done
python3 - <<PY
import glob, json, os
out = {}
for f in sorted(glob.glob("$R/h19_*.json")):
    d = json.load(open(f)); (r,) = d["variants"].values(); out[os.path.basename(f)] = d
    print(os.path.basename(f), "train %.2f s" % r["train_time_s"], "peak %.0f MB" % r["peak_memory_mb"],
          "epochs", [round(e, 3) for e in r["epoch_times_s"]], (r.get("fast_path") or {}).get("cached_step"))
json.dump(out, open("$OUT/h19_runs.json", "w"), indent=1)
PY
PYTHONPATH=/root/site:$PWD/src python3 -m pytest -q -p no:cacheprovider tests/methods/pac/test_device_cache.py \
  --tb=short 2>&1 | grep -E "^E |^FAILED|passed|failed" | head -30
date -u
