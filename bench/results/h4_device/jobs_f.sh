# Issue 19 on one H200 (run by session_y.sh under setsid; results in /root/r):
#  1. bench/fed_kseed_sweep.py --grid rounds: constant vs cosine-decaying step size (and a larger start), 3 seeds,
#     per-round validation loss on the 96 server-held training rows and Rouge-L on 48 of them; the RULE chooses
#     (kseed_choice.json). Held-out rows play no part in it.
#  2. beside it, bench/fed_quality.py (the benchmark's own runs, 40 held-out Dolly rows, bytes) for the two cosine
#     candidates, FedKSeed, 3 seeds; the constant setting's runs are bench/results/fed_quality/dolly_gpu_8rounds/.
#     Only the chosen setting's row stands in the docs as the result; the other is reported as what it was.
#  3. after the choice, FedKSeed-Pro at the chosen setting, 3 seeds, held-out (fed_quality).
# ~8-12 min with 15 processes (and the quality job) on 16 cores.
set -uo pipefail
R=/root/r; mkdir -p $R
T=${TINY:-}
FQ=(python3 bench/fed_quality.py --task dolly --engine inprocess --device ${DEVICE:-cuda} --threads 1 --seeds 0 1 2
    --algorithms fedkseed ${T:+--smoke})
python3 bench/fed_kseed_sweep.py --grid rounds --phase sweep --device ${DEVICE:-cuda} --workers 9 --threads 1 \
  --sweep-s 900 --out $R/ks_rounds ${T:+--smoke} > $R/ks_rounds.log 2>&1 &
SWEEP=$!
"${FQ[@]}" --workers 3 --set round_lr=cosine --out $R/fq_cos15 > $R/fq_cos15.log 2>&1 &
C15=$!
"${FQ[@]}" --workers 3 --set round_lr=cosine lr=2.25e-4 --out $R/fq_cos225 > $R/fq_cos225.log 2>&1 &
C225=$!
wait $SWEEP; grep chosen $R/ks_rounds.log
# 3. FedKSeed-Pro at the chosen setting (the same algorithm family takes the same default), 3 seeds, held-out.
SET=$(python3 - $R/ks_rounds/kseed_choice.json <<'PY'
import json, sys
sys.path.insert(0, "bench")
import fed_kseed_sweep as k
chosen = json.load(open(sys.argv[1]))["chosen"]
if chosen:
    g = k.ROUND_GRID[chosen]
    print(f"round_lr={g['round_lr']} lr={g['lr']}")
PY
)
echo "chosen settings: $SET"
if [ -n "$SET" ]; then
  python3 bench/fed_quality.py --task dolly --engine inprocess --device ${DEVICE:-cuda} --threads 1 --seeds 0 1 2 \
    --algorithms fedkseed-pro ${T:+--smoke} --workers 3 --set $SET --out $R/fq_pro_chosen > $R/fq_pro.log 2>&1
fi
wait $C15 $C225
for d in fq_cos15 fq_cos225 fq_pro_chosen; do python3 bench/fed_quality.py --summary-only --out $R/$d > /dev/null 2>&1; done
tail -n 2 $R/fq_cos15.log $R/fq_cos225.log $R/fq_pro.log
touch $R/fed.done
