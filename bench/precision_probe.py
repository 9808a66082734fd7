"""Where does bf16 LoRA's NaN on CUDA come from (SDPA backend?), and what does autocast's weight casting cost.

CUDA only. One LoRA step on the random-weight SmolLM2-135M shape (first SST-2 batch of 16) in fp32 and in bf16
autocast under each SDPA backend (is the loss and every gradient finite?), then the frozen forward over 4000
sentences at batch 64: fp32, bf16 autocast over fp32 weights, weights stored in bf16 with and without autocast.
The argument is a folder holding bench/pac_vs_baselines.py and smol-tok/ (SmolLM2's tokenizer files and
config.json), as sent to the GPU for docs/benchmarks_pac.md ("Performance"):

  python3 bench/precision_probe.py FOLDER
"""
import sys, time, json, torch
sys.path.insert(0, sys.argv[1] + "/bench")
from pac_vs_baselines import random_backbone
from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.methods import get_method
from edgeft.train.recipe import make_loss_fn
from edgeft.train.batches import epoch_batches
from torch.nn.attention import sdpa_kernel, SDPBackend
dev = torch.device("cuda")
task = load_task(TaskConfig(name="sst2", train_samples=4000, max_length=64, seed=0))
bb = random_backbone("smollm2-135m-shape", sys.argv[1] + "/smol-tok", 0, dev)
feat = Featurizer(task, bb.tokenizer, objective_for(task, bb.head), 64)
feats = feat.encode(task.train)
m = get_method("lora"); model = m.prepare(bb, task).to(dev)
loss_fn = make_loss_fn(feat)
b = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in feat.collate([feats[i] for i in epoch_batches(4000, 16, 0, 0)[0]]).items()}
params = [p for p in model.parameters() if p.requires_grad]
def one(tag, ctx):
    model.zero_grad(set_to_none=True)
    with ctx():
        loss = loss_fn(model, b)
    loss.backward()
    g = all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
    print(json.dumps({"case": tag, "loss": float(loss), "grads_finite": bool(g)}), flush=True)
import contextlib
ac = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
one("fp32 default sdpa", contextlib.nullcontext)
one("bf16 default sdpa", ac)
for name, bk in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)):
    try:
        @contextlib.contextmanager
        def c(bk=bk):
            with sdpa_kernel([bk]), ac():
                yield
        one(f"bf16 only {name}", c)
    except Exception as e:
        print(name, "error", str(e)[:200])
# frozen forward, b64: autocast over fp32 weights vs weights stored in bf16
bs = [feat.collate([feats[i] for i in idx]) for idx in epoch_batches(4000, 64, 0, 0)]
bs = [{k: v.to(dev) for k, v in x.items() if k in ("input_ids", "attention_mask")} for x in bs]
base = bb.model.model
def timed(tag, ctx):
    with torch.no_grad(), ctx():
        for x in bs[:3]: base(**x)
        torch.cuda.synchronize(); t = time.perf_counter()
        for x in bs: base(**x)
        torch.cuda.synchronize()
    print(json.dumps({"frozen_b64": tag, "s": time.perf_counter() - t}), flush=True)
timed("fp32", contextlib.nullcontext)
timed("bf16 autocast, fp32 weights", ac)
base.to(torch.bfloat16)
timed("bf16 weights, no autocast", contextlib.nullcontext)
timed("bf16 weights + autocast", ac)
