# h27 (README): every CUDA-only test on the GPU at this tree, then the new fill-memory test on the tree without the
# mend (src copied, the empty_cache lines removed), which must fail there.
set -uo pipefail
T="tests/methods/pac/test_device_cache.py tests/train/test_precision.py tests/train/test_trainer.py"
python3 -m pytest -q -p no:cacheprovider -rs $T 2>&1 | tail -25
rm -rf /tmp/oldsrc && cp -r src /tmp/oldsrc
python3 - <<'PY'
p = "/tmp/oldsrc/edgeft/methods/pac/model.py"
s = open(p).read()
i = s.index("        if todo and self.device.type == \"cuda\":")
j = s.index("        return len(todo)", i)
open(p, "w").write(s[:i] + s[j:])
PY
PYTHONPATH=/root/site:/tmp/oldsrc python3 -m pytest -q -p no:cacheprovider tests/methods/pac/test_device_cache.py \
  -k gives_its 2>&1 | tail -6
