# h18 (README): the label-word pick's sync fix (61edf09, as of f66a36b: "syncfix") and the whole-step graph (the
# working tree: "after") timed against the code before both (f8a1d73), in one call on one GPU: SmolLM2-135M's
# shape with random weights (timing only), SST-2, 1,000 rows, batch 16, max length 128,
# LoRA at the quality suite's 3 epochs and PAC at its 10, before/after interleaved, twice. Then epoch 3 of PAC under
# torch.profiler (after the fix) and the GPU-only tests of tests/methods/pac/test_device_cache.py.
# Needs: .devcarry/slim (c5 without w1: wheels, SmolLM2's tokenizer) and .devcarry/before (src/bench of f8a1d73,
# no datasets) and .devcarry/syncfix (the same of f66a36b).
set -uo pipefail
X=/root/x; R=$OUT; mkdir -p $X /root/site
cp -r .devcarry/slim/. $X/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site $X/whl/*.whl
for v in before syncfix; do ln -sfn $PWD/src/edgeft/datasets .devcarry/$v/src/edgeft/datasets; done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 EDGEFT_HOME=/root/eh
run() {  # run <before|syncfix|after> <lora|pac_cache> <epochs> <rep>
  local root=$PWD; [ $1 = after ] || root=$PWD/.devcarry/$1
  PYTHONPATH=/root/site:$root/src python3 $root/bench/pac_vs_baselines.py --model $X/t/smol-tok \
    --random-llama smollm2-135m-shape --task sst2 --train-samples 1000 --batch-size 16 --max-length 128 --seed 0 \
    --eval none --device cuda --variants $2 --epochs $3 --out $R/h18_$1_$2_$4.json \
    --label "h18: $1, $2, $3 epochs, rep $4" > $R/h18_$1_$2_$4.log 2>&1 || tail -n 20 $R/h18_$1_$2_$4.log
}
for rep in 1 2; do
  run before lora 3 $rep; run before pac_cache 10 $rep; run syncfix pac_cache 10 $rep
  run after lora 3 $rep; run after pac_cache 10 $rep
done
python3 - <<PY
import glob, json, os
t = {}
for f in sorted(glob.glob("$R/h18_*_*.json")):
    (r,) = json.load(open(f))["variants"].values()
    t[os.path.basename(f)[4:-5]] = r["train_time_s"]
    print(os.path.basename(f), "train %.2f s" % r["train_time_s"], "epochs", [round(e, 3) for e in r["epoch_times_s"]])
for v in ("before", "syncfix", "after"):
    for rep in (1, 2):
        lo, pa = t.get(f"{v}_lora_{rep}", t.get(f"after_lora_{rep}")), t.get(f"{v}_pac_cache_{rep}")
        if lo and pa:
            print(f"{v} rep {rep}: LoRA 3 ep {lo:.2f} s / PAC 10 ep {pa:.2f} s = {lo / pa:.2f}x")
PY
date -u
PYTHONPATH=/root/site:$PWD/src python3 bench/pac_vs_baselines.py --model $X/t/smol-tok \
  --random-llama smollm2-135m-shape --task sst2 --train-samples 1000 --batch-size 16 --max-length 128 --seed 0 \
  --eval none --device cuda --variants pac_cache --epochs 3 --profile-epoch 3 --out $R/h18_prof_pac.json \
  --label "h18: PAC cached epoch under torch.profiler after the sync fix" > $R/h18_prof.log 2>&1 \
  || tail -n 20 $R/h18_prof.log
grep -i "cudaStreamSynchronize\|cudaMemcpyAsync\|Self CPU time total\|Self CUDA time total" \
  $R/*.profile.txt | head
PYTHONPATH=/root/site:$PWD/src python3 -m pytest -q -p no:cacheprovider tests/methods/pac/test_device_cache.py 2>&1 \
  | tail -n 15
date -u
