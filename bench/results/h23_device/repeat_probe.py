"""h23: does a graphed PAC run repeat itself exactly within one process, and if not, which part breaks it?

h22 (one H100): the eager cached step repeated every held-out cell to the last digit of the final loss within a
process; the whole-step graph did not (24 of 30 cells differed). Each variant below trains a tiny random-weight
Llama twice (three times for the first) in this process from the same seeds and reports whether the side network's
weights and every step's loss came out bit for bit the same. A record for docs, not a test (the test is
tests/methods/pac/test_device_cache.py::test_a_graphed_run_repeats_itself_exactly). Run from the repo root on a
GPU: python bench/results/h23_device/repeat_probe.py OUT.json
"""
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = ["tests", "tests/methods/pac"]
import tiny_models  # noqa: E402
from edgeft.methods.pac import graphs  # noqa: E402
from edgeft.train.loop import Trainer, TrainConfig  # noqa: E402
from edgeft.train.recipe import make_loss_fn  # noqa: E402
from test_pac_model import setup  # noqa: E402

BASE = {"device_cache": "on", "graph_bucket": 4, "dropout": 0.0}
VARIANTS = {  # name: (options, patch)
    "eager": ({**BASE, "graphs": False}, None),
    "eager_dropout": ({**BASE, "graphs": False, "dropout": 0.1}, None),
    "graphs_one_bucket": ({**BASE, "graph_bucket": 64}, None),
    "graphs": (BASE, None),
    "graphs_dropout": ({**BASE, "dropout": 0.1}, None),
    "graphs_no_attention": ({**BASE, "heads": 0}, None),
    "graphs_pool_per_graph": (BASE, "pool"),
    "graphs_warm_5": (BASE, "warm5"),
    "graphs_sync_each_step": (BASE, "sync"),
}


def _run(path, options, epochs=8, n=96):
    """As tests/methods/pac/test_device_cache.py's _run, with 96 rows (12 batches an epoch)."""
    t, bb, feat, method, model = setup(path, "causal_lm", {"taps": "every:2", "pair_encoding": "joint", **options},
                                       task="sst2", n=n, max_length=32)
    model = method.place(model, "cuda")
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, device="cuda")
    return model, Trainer(model, method, feat, feat.encode(t.train), cfg, make_loss_fn(feat)).fit()


def patched(patch):
    """Undo-able changes to graphs.CachedStep for one variant."""
    undo = []
    if patch == "pool":
        orig = graphs.CachedStep._capture

        def capture(self, *a, **k):
            self._pool = None  # a fresh pool for each step graph
            return orig(self, *a, **k)
        graphs.CachedStep._capture = capture
        undo.append(lambda: setattr(graphs.CachedStep, "_capture", orig))
    if patch == "warm5":
        old = graphs.WARM_STEPS
        graphs.WARM_STEPS = 5
        undo.append(lambda: setattr(graphs, "WARM_STEPS", old))
    if patch == "sync":
        orig_ts = graphs.CachedStep.train_step

        def train_step(self, *a, **k):
            torch.cuda.synchronize()
            out = orig_ts(self, *a, **k)
            torch.cuda.synchronize()
            return out
        graphs.CachedStep.train_step = train_step
        undo.append(lambda: setattr(graphs.CachedStep, "train_step", orig_ts))
    return undo


def main(out: str) -> None:
    path = tiny_models.make_tiny_model(Path(tempfile.mkdtemp()), "llama")
    graphs.WARM_STEPS = 1  # the tiny run has few batches of each shape (as the tests)
    report = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "variants": {}}
    for name, (options, patch) in VARIANTS.items():
        undo = patched(patch)
        runs = []
        try:
            for _ in range(3 if name == "graphs" else 2):
                model, result = _run(path, options)
                params = torch.cat([p.detach().flatten().float() for p in model.side.parameters()]).cpu()
                runs.append((params, result.losses, model.cached_step.describe()))
        finally:
            for u in undo:
                u()
        p0, l0, d0 = runs[0]
        row = {"describe": d0, "steps": len(l0),
               "same_params": [bool(torch.equal(p0, p)) for p, _, _ in runs[1:]],
               "max_param_diff": [float((p0 - p).abs().max()) for p, _, _ in runs[1:]],
               "same_losses": [l0 == l for _, l, _ in runs[1:]],
               "first_loss_diff_step": [next((i for i, (a, b) in enumerate(zip(l0, l)) if a != b), None)
                                        for _, l, _ in runs[1:]]}
        report["variants"][name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "describe"}), flush=True)
    Path(out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
