set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
M=/root/m; W=/root/w; mkdir -p $W
OUT=${OUT:-/tmp/out}
case "$1" in
setup)
  cp -r .devcarry/h2rte/c4/. $M/
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /root/site $M/whl/*.whl
  mkdir -p /root/eh/models && rm -rf /root/eh/models/minilm-l6 && cp -r $M/minilm /root/eh/models/minilm-l6
  cat $M/part0 $M/part1 $M/part2 $M/part3 > /root/eh/models/minilm-l6/model.safetensors
  echo "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  /root/eh/models/minilm-l6/model.safetensors" | sha256sum -c
  rm -rf /root/code && cp -r $M/code /root/code && ln -sfn $PWD/src/edgeft/datasets /root/code/src/edgeft/datasets
  ;;
esac
export PYTHONPATH=/root/site:/root/code/src EDGEFT_HOME=/root/eh
Q=(python3 /root/code/bench/quality.py --models minilm-l6 --full-models "" --threads 1 --holdout 500 --seeds 0,1,2)
shift
"$@"
