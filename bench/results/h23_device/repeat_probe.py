"""h23: does a graphed PAC run repeat itself exactly within one process, and if not, which part breaks it?

h22 (one H100): the eager cached step repeated every held-out cell to the last digit of the final loss within a
process; the whole-step graph did not (24 of 30 cells differed). Each variant below trains a tiny random-weight
Llama twice (three times for the first) in this process from the same seeds and reports whether the side network's
weights and every step's loss came out bit for bit the same. A record for docs, not a test (the test is
tests/methods/pac/test_device_cache.py::test_a_graphed_run_repeats_itself_exactly). Run from the repo root on a
GPU: python bench/results/h23_device/repeat_probe.py OUT.json [tiny|smollm2] [variant,...]
"""
import json
import os
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
    # PAC's own defaults (dropout 0.1, buckets of 16), for the smollm2 shape
    "eager_default": ({"device_cache": "on", "graphs": False}, None),
    "graphs_default": ({"device_cache": "on"}, None),
    "graphs_default_sync": ({"device_cache": "on"}, "sync"),
    "graphs_default_warm_5": ({"device_cache": "on"}, "warm5"),
    "graphs_default_no_attention": ({"device_cache": "on", "heads": 0}, None),
    "graphs_default_no_dropout": ({"device_cache": "on", "dropout": 0.0}, None),
    "graphs_default_deterministic": ({"device_cache": "on"}, "det"),  # torch's deterministic kernels (warn only)
}


DEVICE = os.environ.get("PROBE_DEVICE", "cuda")  # cpu: a dry run of the script only
SHAPES = {  # tiny: the tests' model and run; smollm2: SmolLM2-135M's shape (random weights) at the suite's run
    "tiny": dict(model={}, taps={"taps": "every:2"}, n=96, max_length=32, batch=8, epochs=8, lr=1e-2),
    "smollm2": dict(model=dict(layers=30, hidden=576, heads=9, kv_heads=3, intermediate=1536, max_positions=256),
                    taps={}, n=1000, max_length=128, batch=16, epochs=4, lr=2e-3),
}


def _run(path, options, shape):
    """As tests/methods/pac/test_device_cache.py's _run, at the shape's rows, batch, length and epochs."""
    sh = SHAPES[shape]
    t, bb, feat, method, model = setup(path, "causal_lm", {**sh["taps"], "pair_encoding": "joint", **options},
                                       task="sst2", n=sh["n"], max_length=sh["max_length"])
    model = method.place(model, DEVICE)
    cfg = TrainConfig(epochs=sh["epochs"], batch_size=sh["batch"], lr=sh["lr"], device=DEVICE)
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
    if patch == "det":
        torch.use_deterministic_algorithms(True, warn_only=True)
        undo.append(lambda: torch.use_deterministic_algorithms(False))
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


def main(out: str, shape: str = "tiny", only: str = "") -> None:
    if shape == "tiny":
        path = tiny_models.make_tiny_model(Path(tempfile.mkdtemp()), "llama")
        graphs.WARM_STEPS = 1  # the tiny run has few batches of each shape (as the tests)
    else:
        path = tiny_models.make_llama(Path(tempfile.mkdtemp()), tiny_models.task_tokenizer("sst2"),
                                      **SHAPES[shape]["model"])
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    report = {"torch": torch.__version__, "gpu": gpu, "shape": shape,
              "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"), "variants": {}}
    for name, (options, patch) in VARIANTS.items():
        if only and name not in only.split(","):
            continue
        undo = patched(patch)
        runs = []
        try:
            for _ in range(3 if name == "graphs" else 2):
                model, result = _run(path, options, shape)
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
    main(*sys.argv[1:])
