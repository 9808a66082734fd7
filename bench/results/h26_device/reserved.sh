# h26 fifth call (README, part 6): reserved against allocated GPU memory of a PAC run, as is and with the allocator's
# cache emptied after the streamed fill; each variant twice, in processes of their own, one after another.
set -uo pipefail
for v in asis empty asis empty; do
  python3 bench/results/h26_device/reserved.py $OUT/h26_reserved_${v}_$SECONDS.json $v 2>&1 | grep -v "Loading\|Writing" | tail -1
done
