"""Is PAC's seed spread on long SST-2 rows a shift of the decision threshold? (issue 15, h10 diagnosis)

make run's single-device proxy (SmolLM2-135M, 1,024 training rows, 4 epochs, batch 32, lr 2e-3, max length 48,
PAC defaults), one train seed per process; scored on the 500 held-out long training rows of ../RULE.md (never dev).
Reports accuracy, the share predicted positive (the rows' own share beside it), and the accuracy if the two label
logits' margin were shifted by its mean over the TRAINING rows (a bias fix a run could make without held-out data).
    python bench/results/make_run_h10/diagnose/bias.py SEED OUT.json
"""
import argparse
import json
import sys

import torch

sys.path.insert(0, "bench")
import pac_vs_baselines as pb  # noqa: E402
from edgeft.data import TaskConfig, load_task  # noqa: E402
from edgeft.data.features import Featurizer, objective_for  # noqa: E402
from edgeft.methods import get_method  # noqa: E402
from edgeft.models import load_backbone  # noqa: E402
from edgeft.train.loop import Trainer, TrainConfig, seed_everything  # noqa: E402
from edgeft.train.objective import forward  # noqa: E402
from edgeft.train.recipe import head_for, make_loss_fn  # noqa: E402

seed, out = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
seed_everything(0)
task = load_task(TaskConfig(name="sst2", train_samples=1024, dev_samples=8, max_length=48, seed=0))
a = argparse.Namespace(holdout=500, holdout_beyond=1280, holdout_min_words=15, seed=0, task="sst2", max_length=48,
                       dev_file=None, text2_column=None)
task.dev = pb.holdout_examples(task, a)
head = head_for("smollm2-135m", task, None)
bb = load_backbone("smollm2-135m", head=head, num_labels=task.num_labels)
feat = Featurizer(task, bb.tokenizer, objective_for(task, bb.head), 48)
train, dev = feat.encode(task.train), feat.encode(task.dev)
method = get_method("pac", {})
seed_everything(seed)
model = method.prepare(bb, task)
cfg = TrainConfig(epochs=4, batch_size=32, lr=2e-3, device="cpu", seed=seed, log_every=10**9)
Trainer(model, method, feat, train, cfg, make_loss_fn(feat)).fit()
model.eval()


@torch.no_grad()
def margins(feats):
    got, labels = [], []
    for k in range(0, len(feats), 32):
        b = feat.collate(feats[k:k + 32])
        _, logits, _ = forward(model, b, feat.objective, feat.label_token_ids)
        got.append((logits[:, 1] - logits[:, 0]).float())
        labels.append(b["label"])
    return torch.cat(got), torch.cat(labels)


m_dev, y_dev = margins(dev)
m_tr, _ = margins(train)
shift = float(m_tr.mean())
res = {"seed": seed, "accuracy": float(((m_dev > 0).long() == y_dev).float().mean()),
       "predicted_positive": float((m_dev > 0).float().mean()), "rows_positive": float(y_dev.float().mean()),
       "train_margin_mean": shift, "heldout_margin_mean": float(m_dev.mean()),
       "accuracy_train_centred": float((((m_dev - shift) > 0).long() == y_dev).float().mean()),
       "accuracy_best_threshold": max(float((((m_dev - t) > 0).long() == y_dev).float().mean())
                                      for t in torch.linspace(float(m_dev.min()), float(m_dev.max()), 401))}
print(json.dumps(res))
json.dump(res, open(out, "w"), indent=1)
