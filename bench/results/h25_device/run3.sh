# h25 third call (README): assemble the wheel, run h24's dev.sh (PAC's SmolLM2 dev table twice at once) on HEAD,
# wait up to $1 s, collect.
set -uo pipefail
source bench/results/h25_device/device_env.sh
join_wheel || exit 1
setsid nohup bash -c "bash bench/results/h24_device/dev.sh; touch $R/dev.done" > $R/dev3.log 2>&1 < /dev/null &
end=$((SECONDS + ${1:-300}))
while [ $SECONDS -lt $end ] && [ ! -f $R/dev.done ]; do sleep 5; done
date -u; tar czf $OUT/r3.tgz -C $R --exclude='*.safetensors' . 2>/dev/null; tail -n 30 $R/dev3.log
