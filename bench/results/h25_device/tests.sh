# h25 first call: the PAC device-cache GPU tests on HEAD (h24's set plus the weak-reference test, on CUDA now).
# Run as SPEED= of session.sh's `speed` step (c0 installed first).
set -uo pipefail
R=${R:-/root/r}; mkdir -p $R
K="callers_stream or repeats or graphs or buckets or dropout_masks or dropped_model"
python3 -m pytest -q -p no:cacheprovider tests/methods/pac/test_device_cache.py -k "$K" > $R/gpu_tests.log 2>&1
tail -3 $R/gpu_tests.log
cp $R/gpu_tests.log $OUT/ 2>/dev/null
