"""Ensemble probe (README.md): single runs against ensembles of 2 and 3 train seeds (softmax averaged; STS-B's scores
averaged), and LoRA, from the logits probe.py wrote.  usage: python analyse.py [MODEL] [DIR]"""
import json, numpy as np, sys
from scipy.stats import pearsonr
from sklearn.metrics import f1_score, matthews_corrcoef
def score(task, pred, refs):
    if task == "stsb": return 100 * pearsonr(pred, refs)[0]
    if task == "mrpc": return 100 * f1_score(refs, pred)
    if task == "cola": return 100 * matthews_corrcoef(refs, pred)
    return 100 * np.mean(np.array(pred) == np.array(refs))
DIR = sys.argv[2] if len(sys.argv) > 2 else "/tmp/ens"


def load(m, t, v, s):
    try: r = json.load(open(f"{DIR}/{m}_{t}_{v}_{s}.json"))
    except FileNotFoundError: return None
    return np.array(r["logits"]), r["refs"]
def pred_of(task, logits_list):
    if task == "stsb": return np.mean([l.reshape(-1) for l in logits_list], 0)
    p = np.mean([np.exp(l - l.max(-1, keepdims=True)) / np.exp(l - l.max(-1, keepdims=True)).sum(-1, keepdims=True)
                 for l in logits_list], 0)
    return p.argmax(-1)
m = sys.argv[1] if len(sys.argv) > 1 else "minilm-l6"
for t in ["sst2", "rte", "mrpc", "cola", "stsb"]:
    pac = {s: load(m, t, "pac_cache", s) for s in range(6)}; pac = {s: v for s, v in pac.items() if v}
    lora = {s: load(m, t, "lora", s) for s in range(3)}; lora = {s: v for s, v in lora.items() if v}
    if not pac: continue
    refs = next(iter(pac.values()))[1]
    single = [score(t, pred_of(t, [v[0]]), refs) for v in pac.values()]
    ens = [score(t, pred_of(t, [pac[s][0] for s in g]), refs) for g in ([0,1,2],[3,4,5]) if all(s in pac for s in g)]
    ens2 = [score(t, pred_of(t, [pac[s][0] for s in g]), refs) for g in ([0,1],[2,3],[4,5]) if all(s in pac for s in g)]
    lo = [score(t, pred_of(t, [v[0]]), v[1]) for v in lora.values()]
    base = [score(t, pred_of(t, [v[0]]), v[1]) for v in (load(m, t, "pacdefault", s) for s in range(3)) if v]
    f = lambda x: f"{np.mean(x):.1f}±{np.std(x, ddof=1) if len(x)>1 else 0:.1f} (n={len(x)})" if x else "-"
    print(f"{t:5s} PAC single {f(single)}  ens2 {f(ens2)}  ens3 {f(ens)}  LoRA {f(lo)}"
          + (f"  PAC default epochs {f(base)}" if base else ""))
