"""Measured costs per transformer block on this machine (`edgeft profile`).

For each block: forward time, backward time when it trains and when backprop only crosses it,
FLOPs counted by torch's FlopCounterMode, and the bytes autograd saves for backward (counted with
saved-tensor hooks, parameters excluded). The machine's matmul FLOP/s turns times into 'effective
FLOPs', so a measured profile can stand in for the analytic cost model on any device.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgeft.errors import ConfigError
from edgeft.models.arch import ModelArch, PRESETS
from edgeft.planner.costmodel import CostTable, Workload, analytic_costs

PROFILE_VERSION = 1


def matmul_flops(n: int = 1024, reps: int = 5) -> float:
    """Sustained fp32 matmul FLOP/s of this machine (the unit that turns seconds into FLOPs)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(ts)


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an allocation that failed (torch says so in a RuntimeError on CPU, OutOfMemoryError on
    CUDA): a --batch or --seq-len too large for this machine, which the user can change."""
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and (
        type(err).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(err)
        or "out of memory" in str(err)))


def _arch_of(bb) -> ModelArch:
    a = bb.arch
    preset = PRESETS.get(bb.name)
    if preset is not None:
        return preset
    return ModelArch(bb.name, a.family, a.num_layers, a.hidden_size, a.num_heads, a.num_kv_heads,
                     a.intermediate_size, a.vocab_size, explicit_head_dim=a.explicit_head_dim)


def _apply_method(bb, method: str, lora_rank: int):
    """The backbone as the cost model shapes `method`: all weights (full), LoRA on query and value, or a
    64-wide adapter beside each frozen block (a method that does not train the backbone)."""
    import torch

    from edgeft.methods.base import method_class

    model = bb.model
    for p in model.parameters():
        p.requires_grad_(method == "full")
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "v_proj"] if bb.arch.family == "llama" else ["query", "value"]
        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules=targets,
                                                 lora_dropout=0.0))
    adapters = None
    if not method_class(method).trains_backbone:
        h = bb.arch.hidden_size
        adapters = [torch.nn.Sequential(torch.nn.Linear(h, 64), torch.nn.ReLU(), torch.nn.Linear(64, h))
                    for _ in range(bb.arch.num_layers)]
    return model, adapters


class _SavedBytes:
    """Counts bytes autograd keeps for backward, skipping parameters (they are weights, not activations)."""

    def __init__(self, params):
        self.param_ptrs = {p.data_ptr() for p in params}
        self.seen: set[tuple] = set()
        self.bytes = 0

    def pack(self, t):
        key = (t.data_ptr(), tuple(t.shape), t.dtype)
        if t.data_ptr() not in self.param_ptrs and key not in self.seen:
            self.seen.add(key)
            self.bytes += t.numel() * t.element_size()
        return t

    @staticmethod
    def unpack(t):
        return t


def _median_time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def profile_model(model: str, method: str = "lora", batch: int = 4, seq_len: int = 128, reps: int = 3,
                  lora_rank: int = 8, threads: int | None = None) -> dict:
    """Loads the backbone (edgeft.models) and measures every block."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgeft.methods.base import costed_methods, method_class
    from edgeft.models import family_of, load_backbone
    from edgeft.models.backbone import load_config
    from edgeft.models.blocks import BlockView

    if method not in costed_methods():
        raise ConfigError(f"method {method!r} cannot be profiled; choose {', '.join(costed_methods())}")
    frozen = not method_class(method).trains_backbone  # the backbone runs forward only; adapters beside it train
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = load_config(model)
    encoder = family_of(config) == "bert"  # an alias or a folder: an encoder has no LM head
    longest = getattr(config, "max_position_embeddings", None)
    if encoder and longest and seq_len > longest:  # BERT's learned positions end there
        raise ConfigError(f"--seq-len {seq_len}: {model} has learned positions for {longest} tokens; profile at "
                          f"most {longest}")
    bb = load_backbone(model, head="sequence_classification" if encoder else "causal_lm")
    arch = _arch_of(bb)
    net, adapters = _apply_method(bb, method, lora_rank)
    view = BlockView(net, bb.arch.family)
    ids = torch.randint(0, arch.vocab_size, (batch, seq_len))
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    with torch.no_grad():
        hidden0 = view.embed(ids, mask)
    params = list(net.parameters())
    rate = matmul_flops()
    blocks = []
    hidden = hidden0
    for i in range(view.num_blocks):
        blk = view.blocks[i]
        x = hidden.detach().requires_grad_(not frozen)

        def fwd():
            if frozen:
                with torch.no_grad():
                    return view.run_blocks(x, i, i + 1, mask)
            return view.run_blocks(x, i, i + 1, mask)

        fwd()
        t_f = _median_time(fwd, reps)
        with FlopCounterMode(display=False) as fc:
            out = fwd()
        f_flops = fc.get_total_flops()
        counter = _SavedBytes(params)
        rec = {"index": i, "params": sum(p.numel() for p in blk.parameters()),
               "trainable": sum(p.numel() for p in blk.parameters() if p.requires_grad), "fwd_s": t_f,
               "fwd_flops": float(f_flops)}
        if frozen:
            ad = adapters[i]
            h_in = out.detach()
            rec["trainable"] = sum(p.numel() for p in ad.parameters())

            def ad_step():
                ad(h_in).pow(2).mean().backward()

            ad_step()
            rec["bwd_train_s"] = _median_time(ad_step, reps)
            rec["bwd_pass_s"] = 0.0
            with FlopCounterMode(display=False) as fc:
                ad_step()
            rec["bwd_train_flops"] = float(fc.get_total_flops())
            rec["bwd_pass_flops"] = 0.0
            with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
                ad(h_in)
            rec["act_saved_bytes"] = counter.bytes
        else:
            with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
                out = view.run_blocks(x, i, i + 1, mask)
            rec["act_saved_bytes"] = counter.bytes
            g = torch.randn_like(out)

            def bwd():
                y = view.run_blocks(x, i, i + 1, mask)
                t0 = time.perf_counter()
                y.backward(g)
                return time.perf_counter() - t0

            bwd()
            rec["bwd_train_s"] = statistics.median(bwd() for _ in range(reps))
            with FlopCounterMode(display=False) as fc:
                y = view.run_blocks(x, i, i + 1, mask)
            with FlopCounterMode(display=False) as fc:
                y.backward(g)
            rec["bwd_train_flops"] = float(fc.get_total_flops())
            trainable = [p for p in blk.parameters() if p.requires_grad]
            for p in trainable:
                p.requires_grad_(False)
            rec["bwd_pass_s"] = statistics.median(bwd() for _ in range(reps))
            with FlopCounterMode(display=False) as fc:
                y = view.run_blocks(x, i, i + 1, mask)
            with FlopCounterMode(display=False) as fc:
                y.backward(g)
            rec["bwd_pass_flops"] = float(fc.get_total_flops())
            for p in trainable:
                p.requires_grad_(True)
            net.zero_grad(set_to_none=True)
        blocks.append(rec)
        with torch.no_grad():
            hidden = view.run_blocks(hidden, i, i + 1, mask)
    wl = Workload(batch=batch, seq_len=seq_len, method=method, lora_rank=lora_rank,
                  task_kind="classification" if bb.arch.family == "bert" else "causal_lm")
    ana = analytic_costs(arch, wl)
    return {
        "version": PROFILE_VERSION, "model": model, "arch": arch.to_dict(), "method": method, "batch": batch,
        "seq_len": seq_len, "workload": asdict(wl),
        "machine": {"matmul_flops": rate, "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "platform": platform.platform(), "python": platform.python_version()},
        "attention": getattr(bb.model.config, "_attn_implementation", "unknown"),
        "blocks": blocks,
        "analytic": {"fwd_flops": float(ana.fwd[0]), "bwd_train_flops": float(ana.bwd_train[0]),
                     "bwd_pass_flops": float(ana.bwd_pass[0]), "act_saved_bytes": float(ana.act_saved[0]),
                     "params": float(ana.params[0]), "trainable": float(ana.trainable[0])},
    }


def load_profile(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"profile {path} not found (make one with `edgeft profile --model M --method X`)")
    try:
        prof = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(prof, dict) or prof.get("version") != PROFILE_VERSION or "blocks" not in prof:
        raise ConfigError(f"{path}: not an edgeft profile (version {PROFILE_VERSION}); re-run `edgeft profile`")
    _check_profile(prof, path)
    return prof


BLOCK_FIELDS = ("params", "trainable", "fwd_s", "bwd_pass_s", "bwd_train_s", "act_saved_bytes")


def _check_profile(prof: dict, path: Path) -> None:
    """The fields a plan reads, present and sane, named on failure: a hand-edited or cut profile (a missing key, a
    block list shorter than the model, a negative time) would otherwise crash in numpy or give negative plans."""
    def bad(field: str, why: str) -> ConfigError:
        return ConfigError(f"{path}: {field} {why}; re-run `edgeft profile` for this model, method and length")

    def number(value, field: str, positive: bool = False) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0 \
                or (positive and value == 0):
            raise bad(field, f"= {value!r} must be a {'positive' if positive else 'non-negative'} number")

    for key in ("model", "method", "seq_len", "batch", "arch", "machine"):
        if key not in prof:
            raise bad(key, "is missing")
    number(prof["batch"], "batch", positive=True)
    number(prof["seq_len"], "seq_len", positive=True)
    if not isinstance(prof["machine"], dict) or "matmul_flops" not in prof["machine"]:
        raise bad("machine.matmul_flops", "is missing")
    number(prof["machine"]["matmul_flops"], "machine.matmul_flops", positive=True)
    layers = prof["arch"].get("num_layers") if isinstance(prof["arch"], dict) else None
    blocks = prof["blocks"]
    if not isinstance(blocks, list) or not isinstance(layers, int) or len(blocks) != layers:
        found = len(blocks) if isinstance(blocks, list) else type(blocks).__name__
        raise bad("blocks", f"holds {found} entries for a model of {layers} layers (arch.num_layers)")
    for i, block in enumerate(blocks):
        for key in BLOCK_FIELDS:
            if not isinstance(block, dict) or key not in block:
                raise bad(f"blocks[{i}].{key}", "is missing")
            number(block[key], f"blocks[{i}].{key}")


def profile_to_table(profile: dict, arch: ModelArch, workload: Workload) -> CostTable:
    """Measured per-block costs as a CostTable (effective FLOPs = seconds x matmul FLOP/s), rescaled
    linearly to the workload's batch; embedding and head stay analytic."""
    if profile["arch"]["num_layers"] != arch.num_layers or profile["arch"].get("hidden_size") != arch.hidden_size:
        raise ConfigError(f"profile is for {profile['model']}, not for {arch.name}: profile the planned model")
    if profile["method"] != workload.method:
        raise ConfigError(f"profile measured method {profile['method']!r}, the plan uses {workload.method!r}")
    if profile["seq_len"] != workload.seq_len:
        raise ConfigError(f"profile measured seq_len {profile['seq_len']}, the plan uses {workload.seq_len}: "
                          "attention cost is not linear in sequence length, so profile at the planned length")
    rate = profile["machine"]["matmul_flops"]
    f = workload.batch / profile["batch"]
    blk = profile["blocks"]
    ana = analytic_costs(arch, workload)
    return CostTable(
        arch=arch, workload=workload, params=np.array([b["params"] for b in blk], float),
        trainable=np.array([b["trainable"] for b in blk], float),
        fwd=np.array([b["fwd_s"] for b in blk]) * rate * f,
        bwd_pass=np.array([b["bwd_pass_s"] for b in blk]) * rate * f,
        bwd_train=np.array([b["bwd_train_s"] for b in blk]) * rate * f,
        act_saved=np.array([b["act_saved_bytes"] for b in blk], float) * f,
        embed_params=ana.embed_params, head_params=ana.head_params, embed_fwd=ana.embed_fwd, head_fwd=ana.head_fwd,
        head_bwd=ana.head_bwd, head_saved=ana.head_saved, boundary_bytes=ana.boundary_bytes,
        embed_trainable=ana.embed_trainable, source=f"profile:{profile['model']}", notes={"machine": profile["machine"]},
    )


def comparison(profile: dict) -> dict:
    """Measured / analytic ratios, block medians (1.0 = the analytic model is exact)."""
    ana, blk, rate = profile["analytic"], profile["blocks"], profile["machine"]["matmul_flops"]

    def med(key):
        return float(np.median([b[key] for b in blk]))

    out = {
        "params": med("params") / ana["params"],
        "trainable": med("trainable") / max(ana["trainable"], 1),
        "fwd_flops (counted)": med("fwd_flops") / ana["fwd_flops"],
        "bwd_train_flops (counted)": med("bwd_train_flops") / max(ana["bwd_train_flops"], 1),
        "act_saved_bytes": med("act_saved_bytes") / max(ana["act_saved_bytes"], 1),
        "fwd_time vs flops/matmul_rate": med("fwd_s") / (ana["fwd_flops"] / rate),
        "bwd_train_time vs flops/matmul_rate": med("bwd_train_s") / max(ana["bwd_train_flops"] / rate, 1e-12),
    }
    if ana["bwd_pass_flops"] > 0:
        out["bwd_pass_flops (counted)"] = med("bwd_pass_flops") / ana["bwd_pass_flops"]
    return out


def compare_table(profile: dict):
    from rich.table import Table

    t = Table(title=f"{profile['model']} / {profile['method']}: measured vs analytic (batch {profile['batch']}, "
                    f"seq {profile['seq_len']}, matmul {profile['machine']['matmul_flops'] / 1e9:.1f} GFLOP/s)")
    t.add_column("quantity (block median)")
    t.add_column("measured / analytic", justify="right")
    for k, v in comparison(profile).items():
        t.add_row(k, f"{v:.3f}")
    return t
