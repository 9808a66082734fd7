# SmolLM2-135M: RMS of the last block's output at the last prompt token (h12 README). .venv/bin/python rms_probe.py
import torch
from edgeft.models.backbone import load_backbone
from edgeft.data.tasks import load_task
bb = load_backbone("smollm2-135m")
m, tok = bb.model, bb.tokenizer
cap = {}
m.model.layers[-1].register_forward_hook(lambda mod, a, o: cap.__setitem__("h", (o[0] if isinstance(o, tuple) else o)))
g = m.model.norm.weight.detach()
for name in ("sst2", "rte"):
    task = load_task(name)
    rms, top4 = [], []
    with torch.no_grad():
        for ex in task.train[:100]:
            ids = tok(task.prompt_template.format(**{k: ex[k] for k in ("text", "text2") if k in ex}), return_tensors="pt")
            m(**ids)
            h = cap["h"][0, -1]
            rms.append(h.pow(2).mean().sqrt().item())
            e = h.pow(2); top4.append((e.topk(4).values.sum() / e.sum()).item())
    t = torch.tensor(rms)
    print(name, "last-token rms mean %.2f std %.2f min %.2f max %.2f; top-4 channel energy share %.2f" % (t.mean(), t.std(), t.min(), t.max(), sum(top4)/len(top4)))
print("final norm gamma: mean |g| %.3f, max %.3f" % (g.abs().mean(), g.abs().max()))
