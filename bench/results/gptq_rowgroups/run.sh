# GPTQ's row groups (guided GPTQ: 4 Hessians a layer) in one batched column loop against one loop per group:
# the same `edgeft compress` on SmolLM2-135M, the code before (BEFORE=path of a checkout of 5a602f6) and after,
# interleaved, twice, each alone under the CPU lock. Usage: BEFORE=/tmp/wt_before bash bench/results/gptq_rowgroups/run.sh
set -euo pipefail
R=bench/results/gptq_rowgroups
for rep in 1 2; do
  for v in before after; do
    src=$PWD/src; [ $v = before ] && src=$BEFORE/src
    flock /tmp/edgeft-cpu.lock env PYTHONPATH=$src .venv/bin/python -m edgeft.cli compress --model smollm2-135m \
      --method gptq --bits 4 --group-size 128 --option sym=false --option embedding=false --calib-samples 16 \
      --calib-seq-len 256 --eval-wikitext-windows 4 --eval-seq-len 256 --eval-task none --dtype float32 \
      --out /tmp/gptq_rowgroups_$v --overwrite > $R/${v}_$rep.log 2>&1
    grep -E "GPTQ|ppl|perplex" $R/${v}_$rep.log | tail -3
  done
done
