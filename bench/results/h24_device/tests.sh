# h24 step 1 (README): the GPU tests on HEAD, then the stream test on the code before the mend (must fail).
# Run as SPEED= of session.sh's `speed` step (c0 installed first); graphs_before_mend.py.txt is
# `git show 9449988:src/edgeft/methods/pac/graphs.py`, carried untracked (the device copy has no .git).
set -uo pipefail
R=${R:-/root/r}; mkdir -p $R
K="callers_stream or repeats or graphs or buckets or dropout_masks"
python3 -m pytest -q -p no:cacheprovider tests/methods/pac/test_device_cache.py -k "$K" > $R/gpu_tests.log 2>&1
tail -3 $R/gpu_tests.log
G=src/edgeft/methods/pac/graphs.py
cp $G /tmp/graphs_head.py && cp bench/results/h24_device/graphs_before_mend.py.txt $G
python3 -m pytest -q -p no:cacheprovider tests/methods/pac/test_device_cache.py -k callers_stream \
  > $R/gpu_stream_before_mend.log 2>&1; echo "before the mend: rc=$? (must be non-zero)"
tail -3 $R/gpu_stream_before_mend.log
cp /tmp/graphs_head.py $G
cp $R/gpu_tests.log $R/gpu_stream_before_mend.log $OUT/ 2>/dev/null
