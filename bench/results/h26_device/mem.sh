# h26 first call (README): the memory probe on SmolLM2-135M's shape, random weights. Run as SPEED= of
# bench/results/h7_device/session.sh's `speed` step (c0 installed first).
set -uo pipefail
R=${R:-/root/r}; mkdir -p $R
python3 bench/results/h26_device/memprobe.py $OUT/h26_memprobe_smollm2.json smollm2 > $R/memprobe.log 2>&1
grep -v "Loading weights" $R/memprobe.log | tail -12
cp $R/memprobe.log $OUT/ 2>/dev/null
