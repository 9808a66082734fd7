# h26 third device call (README, part 4): where do --deterministic runs part across processes? 24 processes at once
# on dev (as quality.py runs it), each PAC graphed (g1) then eager (e1), --deterministic, every step's loss kept:
# MRPC seed 1 (the cell that parted in det.sh) in 12 processes, RTE and STS-B seed 1 (those that parted in run3.sh) in
# 6 each. Needs the SmolLM2 wheel joined (det.sh did it on this machine). Wait up to $1 s, then collect.
set -uo pipefail
source bench/results/h25_device/device_env.sh
W=/root/w/h26rep; mkdir -p $R/rep $W
run_all() {
  cells=(mrpc:1 mrpc:1 mrpc:1 mrpc:1 mrpc:1 mrpc:1 mrpc:1 mrpc:1 mrpc:1 mrpc:1 mrpc:1 mrpc:1
         rte:1 rte:1 rte:1 rte:1 rte:1 rte:1 stsb:1 stsb:1 stsb:1 stsb:1 stsb:1 stsb:1)
  i=0
  for c in "${cells[@]}"; do
    task=${c%:*}; s=${c#*:}; i=$((i + 1))
    python3 bench/pac_vs_baselines.py --model smollm2-135m --train-samples 1000 --batch-size 16 --max-length 128 \
      --seed 0 --train-seed $s --eval last --device auto --in-process --out $R/rep/${task}_s${s}_p$i.json \
      --label "h26 rep: $task seed $s process $i" --task $task --dev-samples 500 --threads 1 --variants "" \
      --sweep bench/results/h26_device/sweep_det.json --epochs 10 --keep-losses --deterministic \
      > $W/${task}_s${s}_p$i.log 2>&1 &
  done
  wait
  python3 bench/results/h26_device/rep_read.py $R/rep/*.json > $R/rep_read.txt 2>&1
  touch $R/rep.done
}
setsid nohup bash -c "$(declare -f run_all); R=$R W=$W run_all" > $R/rep.log 2>&1 < /dev/null &
end=$((SECONDS + ${1:-400}))
while [ $SECONDS -lt $end ] && [ ! -f $R/rep.done ]; do sleep 5; done
date -u; tar czf $OUT/r_rep.tgz -C $R rep rep_read.txt rep.log 2>/dev/null; cat $R/rep_read.txt; tail -3 $R/rep.log
