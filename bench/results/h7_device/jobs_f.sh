# Issue 19 on one H200 (h7, 2026-12-05; started by session.sh under setsid; results in /root/r):
#  1. bench/fed_kseed_sweep.py --grid step: larger starts on the cosine (3e-4, 4e-4) and 12 clients x 10 steps
#     against the chosen setting (2.25e-4, 6x25), all 1,200 MeZO steps, 3 seeds, on the 96 server-held TRAINING rows
#     (validation loss every round, Rouge-L on 48 of them); the RULE chooses (ks_step/kseed_choice.json).
#  2. beside it, bench/fed_quality.py on ALL 80 held-out Dolly rows (eval_every=2) for each candidate other than the
#     chosen setting of today (its 80-row runs are bench/results/fed_quality/dolly_cpu_eval80/), FedKSeed, 3 seeds.
#     Only the rule's pick stands as the result; the others are reported as what they were.
#  3. after the choice, FedKSeed-Pro at the chosen setting, 3 seeds, the same 80 rows.
set -uo pipefail
R=${R:-/root/r}; mkdir -p $R
PY=${PY:-python3}; DEV=${DEVICE:-cuda}; T=${TINY:-}
EV=(eval_samples=80 eval_every=2); [ -n "$T" ] && EV=()
$PY bench/fed_kseed_sweep.py --grid step --phase sweep --device $DEV --workers ${SWEEP_WORKERS:-9} --threads 1 \
  --sweep-s 1200 --out $R/ks_step ${T:+--smoke} > $R/ks_step.log 2>&1 &
SWEEP=$!
setting() {  # a STEP_GRID name -> fed_quality --set words
  $PY - "$1" <<'PY'
import sys
sys.path.insert(0, "bench")
import fed_kseed_sweep as k
g = k.STEP_GRID[sys.argv[1]]
print(f"round_lr={g['round_lr']} lr={g['lr']} clients_per_round={g['clients_per_round']} local_steps={g['local_steps']}")
PY
}
pids=()
for c in lr0.0003-6x25-cosine lr0.0004-6x25-cosine lr0.000225-12x10-cosine lr0.0003-12x10-cosine; do
  $PY bench/fed_quality.py --task dolly --engine inprocess --device $DEV --threads 1 --seeds 0 1 2 --algorithms fedkseed \
    ${T:+--smoke} --workers 3 --set $(setting $c) "${EV[@]}" --out $R/fq_$c > $R/fq_$c.log 2>&1 &
  pids+=($!)
done
wait $SWEEP; grep -A3 chosen $R/ks_step.log | head -4
C=$($PY -c "import json; print(json.load(open('$R/ks_step/kseed_choice.json'))['chosen'] or '')")
echo "chosen: $C"
if [ -n "$C" ]; then
  $PY bench/fed_quality.py --task dolly --engine inprocess --device $DEV --threads 1 --seeds 0 1 2 \
    --algorithms fedkseed-pro ${T:+--smoke} --workers 3 --set $(setting $C) "${EV[@]}" --out $R/fq_pro_$C > $R/fq_pro.log 2>&1
fi
wait "${pids[@]}"
for d in $R/fq_*/; do $PY bench/fed_quality.py --summary-only --out $d > /dev/null 2>&1; done
tail -n 2 $R/fq_*.log
touch $R/fed.done
