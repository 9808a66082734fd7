# h25 second call (README): assemble the wheel, run repeat2.sh, wait up to $1 s, collect.
set -uo pipefail
source bench/results/h25_device/device_env.sh
join_wheel || exit 1
setsid nohup bash bench/results/h25_device/repeat2.sh > $R/repeat2.log 2>&1 < /dev/null &
end=$((SECONDS + ${1:-400}))
while [ $SECONDS -lt $end ] && [ ! -f $R/repeat2.done ]; do sleep 5; done
date -u; tar czf $OUT/r2.tgz -C $R repeat2 repeat2.log repeat2_read.txt 2>/dev/null; tail -n 40 $R/repeat2.log
