# h18, second call (README): after mending what the first call's GPU tests found (token-label batches reached the
# whole step; the forward's graphs with gradient accumulation), the GPU tests again, then the working tree's PAC
# (twice) and LoRA (once) at the suite's budgets and PAC's epoch 3 under torch.profiler. Few files come back from a
# call, so the runs' JSON go into one file and the plots are not kept.
set -uo pipefail
X=/root/x; R=/root/r; mkdir -p $X /root/site $R
cp -r .devcarry/slim/. $X/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site $X/whl/*.whl
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 EDGEFT_HOME=/root/eh PYTHONPATH=/root/site:$PWD/src
python3 -m pytest -q -p no:cacheprovider tests/methods/pac/test_device_cache.py --tb=short 2>&1 \
  | grep -E "^E |^FAILED|passed|failed" | head -40
run() {  # run <lora|pac_cache> <epochs> <tag> [more options]
  python3 bench/pac_vs_baselines.py --model $X/t/smol-tok --random-llama smollm2-135m-shape --task sst2 \
    --train-samples 1000 --batch-size 16 --max-length 128 --seed 0 --eval none --device cuda --variants $1 \
    --epochs $2 --out $R/h18b_$3.json --label "h18 second call: $3" "${@:4}" > $R/h18b_$3.log 2>&1 \
    || tail -n 20 $R/h18b_$3.log
}
run pac_cache 10 pac_1; [ -n "${SHORT:-}" ] || { run lora 3 lora_1; run pac_cache 10 pac_2; }  # SHORT=1: PAC once
[ -n "${SKIP_PROF:-}" ] || run pac_cache 3 prof --profile-epoch 3
python3 - <<PY
import glob, json, os
runs = {}
for f in sorted(glob.glob("$R/h18b_*.json")):
    d = json.load(open(f))
    (r,) = d["variants"].values()
    runs[os.path.basename(f)[5:-5]] = d
    print(os.path.basename(f), "train %.2f s" % r["train_time_s"], "epochs", [round(e, 3) for e in r["epoch_times_s"]],
          (r.get("fast_path") or {}).get("cached_step"))
t = {k: d["variants"][next(iter(d["variants"]))]["train_time_s"] for k, d in runs.items()}
for k in ("pac_1", "pac_2"):
    if k in t and "lora_1" in t:
        print(f"{k}: LoRA 3 ep {t['lora_1']:.2f} s / PAC 10 ep {t[k]:.2f} s = {t['lora_1'] / t[k]:.2f}x")
json.dump(runs, open("$OUT/h18b_runs.json", "w"), indent=1)
PY
cp $R/*.profile.txt $OUT/ 2>/dev/null; cat $R/h18b_*.log > $OUT/h18b_logs.txt
grep -i "cudaStreamSynchronize\|cudaGraphLaunch\|Self CPU time total\|Self CUDA time total" $OUT/*.profile.txt | head
date -u
