# h23, third call: the probe at SmolLM2's shape in 8 processes at once on one GPU (h22 ran 15 at once; the probe
# alone repeated in every variant). Processes 0-3: eager, graphs, graphs without side attention; 4-7: graphs
# without dropout, graphs with torch's deterministic kernels (CUBLAS_WORKSPACE_CONFIG set for them).
set -uo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
R=${R:-$OUT/r}; mkdir -p $R
for i in 0 1 2 3; do
  python3 bench/results/h23_device/repeat_probe.py $R/conc_a$i.json smollm2 \
    eager_default,graphs_default,graphs_default_no_attention > $R/conc_a$i.log 2>&1 &
done
for i in 4 5 6 7; do
  CUBLAS_WORKSPACE_CONFIG=:4096:8 python3 bench/results/h23_device/repeat_probe.py $R/conc_b$i.json smollm2 \
    graphs_default_no_dropout,graphs_default_deterministic > $R/conc_b$i.log 2>&1 &
done
wait
grep -h "^eager\|^graphs" $R/conc_*.log | sed 's/"max_param_diff[^]]*], //' | sort
