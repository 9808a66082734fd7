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
