"""PAC inside the real trainer and evaluator, on tiny random-weight backbones (fast)."""

import json

import pytest
import torch
import torch.nn.functional as F

from edgeft.data import TaskConfig, load_task
from edgeft.data.features import Featurizer, objective_for
from edgeft.errors import CacheError, ConfigError, ModelError
from edgeft.methods import get_method
from edgeft.methods.pac.model import _feature_hash
from edgeft.methods.pac.side_network import ParallelAdapters
from edgeft.methods.pac.streaming import chunks_by_memory
from edgeft.methods.pac.taps import parse_taps
from edgeft.models import load_backbone
from tiny_models import make_tiny_model
from edgeft.train.evaluate import evaluate
from edgeft.train.loop import Trainer, TrainConfig
from edgeft.train.recipe import make_loss_fn


def setup(path, head, options=None, task="sst2", n=24, max_length=32):
    t = load_task(TaskConfig(name=task, train_samples=n, dev_samples=6, max_length=max_length))
    bb = load_backbone(str(path), head=head, num_labels=t.num_labels)
    feat = Featurizer(t, bb.tokenizer, objective_for(t, head), max_length)
    method = get_method("pac", options or {})
    torch.manual_seed(0)
    return t, bb, feat, method, method.prepare(bb, t)


class BackboneSpy:
    """Counts every entry into the backbone's modules: its top module, embeddings and each block."""

    def __init__(self, model):
        self.calls = 0
        view = model.view
        embed = view.core.embed_tokens if model.family == "llama" else view.core.embeddings
        for m in [model.backbone, embed, *view.blocks]:
            m.register_forward_pre_hook(self._hit)

    def _hit(self, *_):
        self.calls += 1


def train(model, method, feat, t, epochs=3, bs=8, lr=1e-2, **extra):
    spy = BackboneSpy(model)
    per_epoch = []

    def after_epoch(_m):
        per_epoch.append(spy.calls - sum(per_epoch))
        return {}

    cfg = TrainConfig(epochs=epochs, batch_size=bs, lr=lr, device="cpu", **extra)
    result = Trainer(model, method, feat, feat.encode(t.train), cfg, make_loss_fn(feat), after_epoch).fit()
    return per_epoch, result


CASES = [("llama", "causal_lm", "sst2"), ("bert", "sequence_classification", "sst2"),
         ("llama", "causal_lm", "shakespeare"), ("bert", "sequence_classification", "stsb")]


@pytest.mark.parametrize("fill", ["stream", "batch"])
@pytest.mark.parametrize("family,head,task", CASES)
def test_epochs_after_the_first_never_enter_the_backbone(family, head, task, fill, tiny_llama, tiny_bert):
    path = tiny_llama if family == "llama" else tiny_bert
    t, bb, feat, method, model = setup(path, head, {"taps": "every:2", "fill": fill, "stream_batch": 5},
                                       task=task, max_length=16)
    per_epoch, result = train(model, method, feat, t, epochs=3)
    assert per_epoch[0] > 0, "epoch 1 must run the backbone to fill the cache"
    assert per_epoch[1:] == [0, 0]
    stats = model.cache.stats
    n = len(feat.encode(t.train))
    # tap_norm=channel (the default) reads every sample once more before epoch 1's first step, for its statistics
    if fill == "stream":  # filled before the statistics and epoch 1's first batch: everything reads the cache
        assert stats.writes == n and stats.hits == 4 * n and stats.misses == 0
        assert model.backbone_calls == -(-n // 5)  # one pass per micro-batch of 5
    else:  # the statistics pass misses and fills; every training batch then reads the cache
        assert stats.writes == n and stats.hits == 3 * n and stats.misses == n
    k = len(result.losses) // 3
    assert sum(result.losses[-k:]) < sum(result.losses[:k]), "the side network learns from cached activations"


@pytest.mark.parametrize("family,head,task", CASES)
def test_streamed_fill_stores_what_the_per_batch_pass_computes(family, head, task, tiny_llama, tiny_bert):
    """Block-by-block over length-sorted micro-batches and tiny chunks = the one-batch backbone pass."""
    path = tiny_llama if family == "llama" else tiny_bert
    entries = {}
    for fill in ("stream", "batch"):
        t, bb, feat, method, model = setup(path, head, {"taps": "every:2", "cache_dtype": "fp32", "fill": fill,
                                                        "stream_batch": 3, "stream_mb": 1e-3}, task=task)
        feats = feat.encode(t.train)
        if fill == "stream":
            assert model.fill_cache(feats, feat.collate) == len(feats)
            assert model.fill_cache(feats, feat.collate) == 0, "a filled cache is not filled again"
        else:
            with torch.no_grad():
                for k in range(0, len(feats), 8):
                    b = feat.collate(feats[k:k + 8])
                    model.tapped(b["input_ids"], b["attention_mask"], b.get("token_type_ids"), b["ids"])
        entries[fill] = {str(f["id"]): model.cache.lookup([str(f["id"])], [_feature_hash(f)])[0] for f in feats}
    for sid, (payload, rows) in entries["batch"].items():
        other, other_rows = entries["stream"][sid]
        assert rows == other_rows and payload.nbytes == other.nbytes
        assert torch.allclose(torch.from_numpy(payload.view("float32")), torch.from_numpy(other.view("float32")),
                              atol=1e-5, rtol=1e-4)


def test_backbone_kept_on_host_is_lent_one_block_at_a_time(tiny_llama):
    """keep_backbone_on_host: blocks stay on the host between passes, each lent once per chunk of the fill."""
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"taps": "every:2", "stream_batch": 4,
                                                                  "stream_mb": 1e-3})
    model.keep_backbone_on_host(torch.device("cpu"))
    host = {id(p): p.data_ptr() for m in model._offloadable() for p in m.parameters()}
    feats = feat.encode(t.train)
    model.fill_cache(feats, feat.collate)
    n_chunks = len(chunks_by_memory([len(f["input_ids"]) for f in feats], model.side.hidden, 1e-3, 4))
    block_bytes = sum(p.nbytes for b in model.view.blocks[:model.taps[-1] + 1] for p in b.parameters())
    assert n_chunks > 1 and model._host.bytes_lent == n_chunks * block_bytes
    assert all(p.data_ptr() == host[id(p)] for m in model._offloadable() for p in m.parameters()), "not back home"
    model.to("cpu")  # a later .to() keeps them on the host too
    assert all(p.data_ptr() == host[id(p)] for m in model._offloadable() for p in m.parameters())


def test_backbone_kept_on_host_lends_the_weights_as_precision_stored_them(tiny_llama):
    """Precision.cast_frozen (CUDA bf16) re-stores the host-kept blocks' frozen weights in bf16: the fill must lend
    those, not the fp32 copies kept when the backbone went to the host (it did, and autocast re-cast every weight)."""
    from edgeft.train.precision import Precision

    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"taps": "every:2", "stream_batch": 4})
    model.keep_backbone_on_host(torch.device("cpu"))
    bf16 = Precision("bf16", "cpu")
    bf16.device = torch.device("cuda")  # cast_frozen's rule, without a GPU
    assert bf16.cast_frozen(model) > 0
    assert {host.dtype for pairs in model._host._pairs.values() for _, host in pairs} >= {torch.bfloat16}  # kept now
    block = model.view.blocks[0]
    linear = next(m for m in block.modules() if isinstance(m, torch.nn.Linear))
    assert linear.weight.dtype == torch.bfloat16
    with model._host.lent(block):
        assert linear.weight.dtype == torch.bfloat16
    assert linear.weight.dtype == torch.bfloat16  # back home, still bf16
    before = model._host.bytes_lent
    with model._host.lent(block):
        pass
    assert model._host.bytes_lent - before == sum(p.nbytes for p in block.parameters())  # bf16 bytes cross the bus
    model._host.unload_all()
    assert linear.weight.dtype == torch.bfloat16


def test_streamed_chunks_cover_every_sample_once_within_the_budget():
    lengths = [5, 30, 7, 12, 30, 3, 9, 18, 22, 1]
    chunks = chunks_by_memory(lengths, hidden=4, budget_mb=3 * 30 * 4 * 4 / 2**20, micro_batch=3)
    flat = [i for c in chunks for i in c]
    assert sorted(flat) == list(range(10)) and [lengths[i] for i in flat] == sorted(lengths)
    for c in chunks:
        mbs = [c[k:k + 3] for k in range(0, len(c), 3)]
        cost = sum(len(mb) * max(lengths[i] for i in mb) * 4 * 4 for mb in mbs)
        assert len(mbs) == 1 or cost <= 3 * 30 * 4 * 4


def test_without_cache_every_epoch_runs_the_backbone(tiny_llama):
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache": "off", "tap_norm": "token"})
    per_epoch, _ = train(model, method, feat, t, epochs=2)
    assert per_epoch[0] == per_epoch[1] > 0


@pytest.mark.parametrize("family,head,task,heads", [c + (0,) for c in CASES] + [
    ("llama", "causal_lm", "sst2", 4), ("bert", "sequence_classification", "sst2", 4)])
def test_cached_training_matches_uncached_training(family, head, task, heads, tiny_llama, tiny_bert):
    """With an fp32 cache the served activations are the computed ones: the same losses, step for step."""
    path = tiny_llama if family == "llama" else tiny_bert
    losses = {}
    for cache in ("memory", "off"):
        t, bb, feat, method, model = setup(path, head, {"cache": cache, "cache_dtype": "fp32", "dropout": 0.0,
                                                        "heads": heads}, task=task, max_length=16)
        # every token when attended over, for language modelling, and for a pair read as two segments (pair_encoding)
        assert model.positions == ("all" if heads or task == "shakespeare" or model.pair_encoding != "joint"
                                   else model.head_pool)
        losses[cache] = train(model, method, feat, t, epochs=3)[1].losses
    assert torch.allclose(torch.tensor(losses["memory"]), torch.tensor(losses["off"]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("heads,init", [(0, "random"), (4, "random"), (0, "backbone"), (4, "backbone")])
def test_side_network_starts_at_the_frozen_backbone(tiny_llama, heads, init):
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"heads": heads, "cache_dtype": "fp32",
                                                                 "side_init": init})
    batch = feat.collate(feat.encode(t.train[:5]))
    model.eval()
    with torch.no_grad():
        ours = model(batch["input_ids"], batch["attention_mask"], logits_to_keep=1, sample_ids=batch["ids"]).logits
        ref = bb.view.forward(batch["input_ids"], batch["attention_mask"])[:, -1:]
    assert torch.allclose(ours, ref, atol=1e-4)
    assert all(not p.requires_grad for p in bb.model.parameters())


def test_gated_closed_form_equals_the_recurrence_and_starts_as_a_mean():
    torch.manual_seed(0)
    net = ParallelAdapters(hidden=12, num_taps=5, width=6, combine="gated", dropout=0.0)
    assert torch.allclose(net.tap_weights(), torch.full((5,), 0.2), atol=1e-3)
    with torch.no_grad():
        net.gate.normal_()
    z = torch.randn(3, 5, 6)
    mu = torch.sigmoid(net.gate)
    s = torch.zeros(3, 6)
    for i in range(5):
        s = mu[i] * s + (1 - mu[i]) * z[:, i]
    assert torch.allclose(torch.einsum("bnr,n->br", z, net.tap_weights()), s, atol=1e-6)


def test_tap_sets():
    assert parse_taps("all", 6) == (0, 1, 2, 3, 4, 5)
    assert parse_taps("every:2", 6) == (1, 3, 5)
    assert parse_taps(4, 6) == (3, 5)
    assert parse_taps("0,2", 6) == (0, 2, 5)
    assert parse_taps([-2], 6) == (4, 5)
    with pytest.raises(ConfigError, match=r"block\(s\) \[9\] outside 0..5"):
        parse_taps("1,9", 6)
    with pytest.raises(ConfigError, match="not 'all', 'every:K'"):
        parse_taps("most", 6)


def test_the_fill_takes_256_sentences_a_call_on_cuda_and_64_elsewhere_unless_told(tiny_llama, monkeypatch):
    """stream_batch's default follows the device: the fill is launch-bound on a GPU, compute-bound on a CPU."""
    from edgeft.methods.pac import model as pac_model

    assert pac_model.fill_micro_batch(None, torch.device("cuda")) == 256
    assert pac_model.fill_micro_batch(None, torch.device("cpu")) == 64
    assert pac_model.fill_micro_batch(None, torch.device("mps")) == 64
    assert pac_model.fill_micro_batch(5, torch.device("cuda")) == 5
    seen = []

    def spy(lengths, hidden, budget_mb, micro_batch):
        seen.append(micro_batch)
        return chunks_by_memory(lengths, hidden, budget_mb, micro_batch)

    monkeypatch.setattr(pac_model, "chunks_by_memory", spy)
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"taps": "every:2"})
    assert model.fill_cache(feat.encode(t.train), feat.collate) == len(t.train)
    assert seen == [64]  # this CPU run, no stream_batch given


def test_bad_options_are_clear(tiny_llama):
    with pytest.raises(ConfigError, match="method 'pac' options: cache_dtype"):
        get_method("pac", {"cache_dtype": "int4"})
    for key, bad in (("fill", "sometimes"), ("stream_mb", 0), ("stream_batch", 0), ("side_layers", 0),
                     ("fill_precision", "fp8")):
        with pytest.raises(ConfigError, match=f"method 'pac' options: {key}"):
            get_method("pac", {key: bad})
    with pytest.raises(ConfigError, match="pool=mean: language modelling needs every position"):
        setup(tiny_llama, "causal_lm", {"pool": "mean"}, task="shakespeare")
    with pytest.raises(ConfigError, match="side width 7 must be a multiple of the number of heads"):
        setup(tiny_llama, "causal_lm", {"width": 7, "heads": 4})


def test_budget_error_or_recompute_fallback(tiny_llama):
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache_budget_mb": 0.005})
    with pytest.raises(CacheError, match="past its budget"):
        train(model, method, feat, t, epochs=1)
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache_budget_mb": 0.005, "on_budget": "recompute"})
    per_epoch, _ = train(model, method, feat, t, epochs=2)
    assert 0 < per_epoch[1] and model.cache.stats.over_budget > 0 and len(model.cache) > 0


def test_stale_disk_cache_from_another_backbone_is_refused(tmp_path, tiny_llama):
    cache_dir = str(tmp_path / "cache")
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache": "disk", "cache_dir": cache_dir})
    train(model, method, feat, t, epochs=1)
    other = make_tiny_model(tmp_path / "other-llama", "llama", seed=1)
    with pytest.raises(CacheError, match="stale activation cache.*backbone: cached"):
        setup(other, "causal_lm", {"cache": "disk", "cache_dir": cache_dir})
    # the same backbone reuses it: even epoch 1 is served from disk
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache": "disk", "cache_dir": cache_dir})
    per_epoch, _ = train(model, method, feat, t, epochs=1)
    assert per_epoch == [0]


def test_weights_replaced_in_place_make_the_cache_stale(tmp_path):
    path = make_tiny_model(tmp_path / "llama", "llama", seed=0)
    opts = {"cache": "disk", "cache_dir": str(tmp_path / "cache")}
    t, bb, feat, method, model = setup(path, "causal_lm", opts)
    train(model, method, feat, t, epochs=1)
    make_tiny_model(tmp_path / "llama", "llama", seed=5)  # same folder, same identity, new weights
    with pytest.raises(CacheError, match="weights: cached"):
        setup(path, "causal_lm", opts)


def test_corrupt_cache_entry_stops_training_or_is_recomputed(tmp_path, tiny_llama):
    cache_dir = tmp_path / "cache"
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache": "disk", "cache_dir": str(cache_dir)})
    train(model, method, feat, t, epochs=1)
    model.cache.close()
    shard = cache_dir / "shard-00000.bin"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    shard.write_bytes(bytes(raw))
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache": "disk", "cache_dir": str(cache_dir)})
    with pytest.raises(CacheError, match="is corrupt"):
        train(model, method, feat, t, epochs=1)
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache": "disk", "cache_dir": str(cache_dir),
                                                                 "on_corrupt": "recompute"})
    per_epoch, _ = train(model, method, feat, t, epochs=2)
    assert model.cache.stats.corrupt == 1 and per_epoch[0] > 0 and per_epoch[1] == 0


def test_save_and_load_give_the_same_predictions(tmp_path, tiny_bert):
    t, bb, feat, method, model = setup(tiny_bert, "sequence_classification")
    train(model, method, feat, t, epochs=2)
    method.save(model, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["pac.json", "pac.safetensors"]
    fresh = load_backbone(str(tiny_bert), head="sequence_classification", num_labels=2)
    loaded = method.load(fresh, t, tmp_path / "adapter")
    batch = feat.collate(feat.encode(t.dev))
    model.eval(), loaded.eval()
    with torch.no_grad():
        a = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        b = loaded(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ModelError, match="does not fit.*width: saved"):
        get_method("pac", {"width": 12}).load(fresh, t, tmp_path / "adapter")
    other = load_backbone(str(make_tiny_model(tmp_path / "other", "bert", seed=3)), head="sequence_classification")
    with pytest.raises(ModelError, match="belongs to backbone"):
        method.load(other, t, tmp_path / "adapter")


@pytest.mark.parametrize("heads", [0, 4])
def test_generation_with_kv_cache_equals_rerunning_the_model(tiny_llama, heads):
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache": "off", "heads": heads}, task="dolly", n=4,
                                       max_length=48)
    with torch.no_grad():  # a side network that changes the answer
        model.side.up.weight.normal_(0, 1.0)
        if heads:
            model.side.attention.out.weight.normal_(0, 1.0)
    prompt, out = _generation_equals_rerun(model, feat, t, bb, 6)
    base = bb.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                             do_sample=False, pad_token_id=bb.tokenizer.pad_token_id)
    assert base.tolist() != out.tolist(), "the side network must take part in generation"


def _generation_equals_rerun(model, feat, t, bb, steps):
    """KV-cached generate() gives the tokens that re-running the model on the growing sequence picks."""
    model.eval()
    prompt = torch.tensor([feat.encode(t.dev[:1])[0]["prompt_ids"]])
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=steps,
                         pad_token_id=bb.tokenizer.pad_token_id)
    seq = prompt
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(seq, torch.ones_like(seq), logits_to_keep=1).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert out.tolist() == seq.tolist()
    return prompt, out


def test_generation_eval_runs_through_the_evaluator(tiny_llama):
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", task="dolly", n=8, max_length=48)
    train(model, method, feat, t, epochs=1, bs=4)
    metrics = evaluate(model, t, feat, feat.encode(t.dev[:3]), batch_size=2, max_new_tokens=4)
    assert t.metric_name in metrics and len(metrics["samples"]) == 3


def test_finetune_recipe_trains_saves_and_reloads_pac(tmp_path, tiny_llama):
    from edgeft.train.recipe import FinetuneConfig, load_for_eval, run_finetune

    cfg = FinetuneConfig(model=str(tiny_llama), task=TaskConfig(name="sst2", train_samples=16, dev_samples=8,
                                                                max_length=24),
                         method="pac", method_options={"taps": "every:2"},
                         train=TrainConfig(epochs=2, batch_size=8, lr=1e-2, device="cpu"), out=str(tmp_path / "run"))
    metrics = run_finetune(cfg)
    assert metrics["method"] == "pac" and metrics["trainable_params"] < metrics["total_params"]
    note = json.loads((tmp_path / "run" / "adapter" / "edgeft_adapter.json").read_text())
    assert note["method"] == "pac" and note["backbone_identity"]
    t = load_task(cfg.task)
    _, model = load_for_eval(str(tiny_llama), t, "auto", tmp_path / "run" / "adapter")
    assert type(model).__name__ == "PacModel"


def test_side_attention_is_causal_for_decoders_and_ignores_padding():
    torch.manual_seed(0)
    net = ParallelAdapters(hidden=12, num_taps=3, width=8, heads=2, causal=True, dropout=0.0).eval()
    with torch.no_grad():
        net.attention.out.weight.normal_()
        net.up.weight.normal_()
    taps, mask = torch.randn(1, 5, 3, 12), torch.ones(1, 5, dtype=torch.long)
    later = taps.clone()
    later[:, 4] += torch.randn(3, 12)
    a, b = net(taps, mask), net(later, mask)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6) and not torch.allclose(a[:, 4], b[:, 4])
    mask[:, 0] = 0  # a padding position: whatever it holds must not matter to the real ones
    padded = taps.clone()
    padded[:, 0] += 5 * torch.randn(3, 12)
    assert torch.allclose(net(taps, mask)[:, 1:], net(padded, mask)[:, 1:], atol=1e-6)


# -- side_init=backbone: side layers copied from the backbone's last blocks, pruned to the side width ----------------
def _copied_stream(model, batch):
    """(copied side layers run on the entry tap, the last tap, mask): the copies' output before any training."""
    with torch.no_grad():
        taps = model.tapped(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        side = model.side
        out = side.copied(taps[..., side.entry_tap, :], None, batch["attention_mask"], model.view.block_inputs)
    return out, taps[..., -1, :], batch["attention_mask"].bool()


@pytest.mark.parametrize("family,head", [("llama", "causal_lm"), ("bert", "sequence_classification")])
def test_full_width_backbone_init_recomputes_the_last_blocks_exactly(family, head, tiny_llama, tiny_bert):
    """At width = H nothing is pruned: the copies fed the tapped input of block L-k give the backbone's h_L."""
    path = tiny_llama if family == "llama" else tiny_bert
    t, bb, feat, method, model = setup(path, head, {"side_init": "backbone", "reduction": 1, "side_layers": 2,
                                                    "cache_dtype": "fp32"})
    n = bb.view.num_blocks
    assert model.taps[model.side.entry_tap] == n - 3 and len(model.side.copies) == 2
    assert torch.equal(model.side.channels, torch.arange(bb.arch.hidden_size))
    out, last, mask = _copied_stream(model, feat.collate(feat.encode(t.train[:6])))
    assert torch.allclose(out[mask], last[mask], atol=1e-5)
    # the copies are trainable and independent of the frozen blocks they came from
    assert all(p.requires_grad for p in model.side.copies.parameters())
    assert all(not p.requires_grad for p in bb.view.blocks[-1].parameters())


def test_pruning_keeps_the_largest_weights_and_shrinks_every_dimension(tiny_llama):
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"side_init": "backbone", "reduction": 4,
                                                                 "side_layers": 1})
    h, last = bb.arch.hidden_size, bb.view.blocks[-1]
    r = h // 4
    side = model.side
    assert side.width == r and side.channels.shape == (r,)
    c = side.copies[0]
    head_dim = last.self_attn.head_dim
    # 4 query heads in 2 key/value groups: round(2 * r / H) = 0 -> one whole group is kept (2 query heads)
    assert c.self_attn.k_proj.weight.shape == (head_dim, r) and c.self_attn.q_proj.weight.shape == (2 * head_dim, r)
    assert c.self_attn.o_proj.weight.shape == (r, 2 * head_dim)
    assert c.mlp.gate_proj.weight.shape == (round(last.mlp.gate_proj.out_features / 4), r)
    assert c.input_layernorm.weight.shape == (r,)
    # MLP channels kept by the documented magnitude rule, and their weights are the backbone's own
    w, keep = last.mlp, side.channels
    score = w.gate_proj.weight.abs().sum(1) + w.up_proj.weight.abs().sum(1) + w.down_proj.weight.abs().sum(0)
    mlp = torch.sort(torch.topk(score, c.mlp.down_proj.in_features).indices).values
    assert torch.equal(c.mlp.down_proj.weight, w.down_proj.weight[keep][:, mlp])
    assert torch.equal(c.mlp.up_proj.weight, w.up_proj.weight[mlp][:, keep])
    # a residual channel whose weights are made the largest is kept, one whose weights are zeroed is dropped
    with torch.no_grad():
        last.mlp.down_proj.weight[5] *= 100
        last.mlp.up_proj.weight[:, 7] = 0
        last.mlp.gate_proj.weight[:, 7] = 0
        last.mlp.down_proj.weight[7] = 0
        last.self_attn.q_proj.weight[:, 7] = 0
        last.self_attn.k_proj.weight[:, 7] = 0
        last.self_attn.v_proj.weight[:, 7] = 0
        last.self_attn.o_proj.weight[7] = 0
    model = method.prepare(bb, t)
    assert 5 in model.side.channels.tolist() and 7 not in model.side.channels.tolist()



def test_backbone_init_trains_its_copies_and_never_reenters_the_backbone(tiny_llama, tiny_bert):
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"side_init": "backbone"})
    before = [p.detach().clone() for p in model.side.copies.parameters()]
    per_epoch, result = train(model, method, feat, t, epochs=3)
    assert per_epoch[1:] == [0, 0]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.side.copies.parameters())), "copies must train"
    assert float(model.side.gain.detach().abs().sum()) > 0, "the adapters' feature must join the stream"
    t, bb, feat, method, model = setup(tiny_bert, "sequence_classification", {"side_init": "backbone"})
    for copy in model.side.copies:  # fewer heads than the backbone's: transformers 4.x's BERT reshapes by the count
        attn = copy.attention.self
        assert attn.num_attention_heads * attn.attention_head_size == attn.all_head_size == attn.query.out_features
        assert attn.num_attention_heads < bb.arch.num_heads
    assert train(model, method, feat, t, epochs=2)[0][1] == 0


def test_backbone_init_without_heads_is_per_token(tiny_llama):
    """heads=0: each position runs the copies alone, so changing one position's taps changes only its output."""
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"side_init": "backbone", "heads": 0},
                                       task="shakespeare")
    assert model.positions == "all"
    side = model.side.eval()
    with torch.no_grad():
        side.up.weight.normal_()
        taps, mask = torch.randn(2, 5, len(model.taps), bb.arch.hidden_size), torch.ones(2, 5, dtype=torch.long)
        other = taps.clone()
        other[:, 2] += torch.randn_like(other[:, 2])
        a, b = side(taps, mask, model.view.block_inputs), side(other, mask, model.view.block_inputs)
    keep = [0, 1, 3, 4]
    assert torch.allclose(a[:, keep], b[:, keep], atol=1e-5) and not torch.allclose(a[:, 2], b[:, 2])


def test_backbone_init_options_are_checked_saved_and_reloaded(tmp_path, tiny_llama):
    from edgeft.runtime.strategies.pac_bridge import finish_side

    with pytest.raises(ConfigError, match="side_init=backbone: copies the last side_layers=4 blocks"):
        setup(tiny_llama, "causal_lm", {"side_init": "backbone", "side_layers": 4})
    with pytest.raises(ConfigError, match="side_init=backbone: the side width 128 must be between 1 and"):
        setup(tiny_llama, "causal_lm", {"side_init": "backbone", "width": 128})
    with pytest.raises(ConfigError, match="method 'pac' options: side_init"):
        get_method("pac", {"side_init": "pretrained"})
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"side_init": "backbone", "taps": "every:2"})
    assert model.taps == (1, 3)  # the entry (block 1, before the copies of blocks 2 and 3) was already tapped
    with pytest.raises(ConfigError, match="side_init=backbone.*use side_init=random there"):
        finish_side(model.side, torch.zeros(1, 3, model.side.width))
    train(model, method, feat, t, epochs=1)
    method.save(model, tmp_path / "a")
    assert json.loads((tmp_path / "a" / "pac.json").read_text())["side_init"] == "backbone"
    fresh = load_backbone(str(tiny_llama), head="causal_lm")
    loaded = method.load(fresh, t, tmp_path / "a")
    batch = feat.collate(feat.encode(t.dev))
    model.eval(), loaded.eval()
    with torch.no_grad():
        a = model(batch["input_ids"], batch["attention_mask"], logits_to_keep=1).logits
        b = loaded(batch["input_ids"], batch["attention_mask"], logits_to_keep=1).logits
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ModelError, match="side_init: saved 'backbone', now 'random'"):
        get_method("pac", {"taps": "every:2", "side_init": "random"}).load(fresh, t, tmp_path / "a")


def test_generation_with_backbone_init_equals_rerunning_the_model(tiny_llama):
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache": "off", "side_init": "backbone"},
                                       task="dolly", n=4, max_length=48)
    with torch.no_grad():
        model.side.up.weight.normal_(0, 1.0)
    _generation_equals_rerun(model, feat, t, bb, 5)


def test_channel_norm_standardises_each_tap_channel_and_keeps_the_start():
    """fit_tap_stats on outlier-heavy taps: every (tap, channel) of the fitted input has mean 0 and std 1."""
    torch.manual_seed(0)
    net = ParallelAdapters(hidden=16, num_taps=3, width=8, dropout=0.0, tap_norm="channel")
    taps = torch.randn(6, 10, 3, 16) * (torch.rand(16) * 3 + 0.1)
    taps[..., 5] += 40.0  # an outlier channel, as the residual streams of Llama-family models have
    mask = torch.ones(6, 10, dtype=torch.long)
    mask[0, 7:] = 0  # padding does not count
    taps[0, 7:] = 1e4
    plain = F.layer_norm(taps, (16,))  # what the adapters read with tap_norm=token

    def standardised():
        return (plain - net.tap_shift) * net.tap_scale

    assert torch.allclose(standardised(), plain)  # unfitted: the identity
    assert net.fit_tap_stats([(taps[:3], mask[:3]), (taps[3:], mask[3:])]) == int(mask.sum())
    x = standardised()[mask.bool()]
    assert torch.allclose(x.mean(0), torch.zeros(3, 16), atol=1e-4)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(3, 16), atol=1e-3)
    assert not torch.allclose(plain, standardised())
    folded = net.adapters(taps)  # the standardisation folded into the down-projection computes the same features
    assert torch.allclose(folded, F.gelu(torch.einsum("...nh,nhr->...nr", standardised(), net.down)
                                         + net.down_bias), atol=1e-4)
    assert torch.equal(net(taps, mask), torch.zeros(6, 10, 16))  # the up-projection still starts at zero


def test_channel_norm_is_fitted_before_training_saved_and_reloaded(tmp_path, tiny_llama):
    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"tap_norm": "channel", "norm_samples": 10})
    assert int(model.side.tap_rows) == 0
    train(model, method, feat, t, epochs=1)
    rows = sum(len(f["input_ids"]) for f in feat.encode(t.train)[:10])
    assert int(model.side.tap_rows) == rows and not torch.all(model.side.tap_scale == 1)
    method.save(model, tmp_path / "adapter")
    fresh = load_backbone(str(tiny_llama), head="causal_lm")
    loaded = method.load(fresh, t, tmp_path / "adapter")
    assert torch.equal(loaded.side.tap_shift, model.side.tap_shift)
    with pytest.raises(ModelError, match="tap_norm: saved 'channel', now 'token'"):
        get_method("pac", {"tap_norm": "token"}).load(fresh, t, tmp_path / "adapter")


def test_channel_norm_cached_and_uncached_runs_measure_the_same_statistics(tiny_llama):
    fitted = {}
    for cache in ("memory", "off"):
        t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"tap_norm": "channel", "cache": cache,
                                                                     "cache_dtype": "fp32", "dropout": 0.0})
        fitted[cache] = (train(model, method, feat, t, epochs=2)[1].losses, model.side.tap_scale.clone())
    assert torch.allclose(fitted["memory"][1], fitted["off"][1], rtol=1e-4)
    assert torch.allclose(torch.tensor(fitted["memory"][0]), torch.tensor(fitted["off"][0]), rtol=1e-4, atol=1e-5)


def test_the_verbalizer_reads_the_label_words_logits_only_and_the_same_values(tiny_llama):
    """forward(vocab_ids=) gives the LM head's logits for the label words alone: the loss, the gradients of the
    side network and the predictions equal those from the whole vocabulary's logits."""
    from edgeft.train.objective import forward

    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"dropout": 0.0})
    batch = feat.collate(feat.encode(t.train[:6]))
    labels = feat.label_token_ids
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    subset = model(**inputs, logits_to_keep=1, vocab_ids=labels).logits
    whole = model(**inputs, logits_to_keep=1).logits
    assert subset.shape[-1] == len(labels) < whole.shape[-1]
    assert torch.allclose(subset, whole[..., labels], atol=1e-6)

    def grads(m):
        m.zero_grad(set_to_none=True)
        loss = forward(m, batch, "verbalize", labels)[0]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters() if p.requires_grad]

    loss_subset, g_subset = grads(model)
    model.accepts_vocab_ids = False  # the objective's other branch: whole vocabulary, then the label columns
    loss_whole, g_whole = grads(model)
    assert torch.allclose(loss_subset, loss_whole, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_subset, g_whole))


def test_generate_and_chat_stream_a_pac_adapters_answer(tiny_llama, tmp_path):
    """`edgeft generate/chat --adapter` with a PAC adapter: PacModel.generate streams through transformers'
    TextIteratorStreamer, token for token what it returns (before, PAC adapters were refused there)."""
    from edgeft.generate import Sampling, open_talker
    from edgeft.methods.base import write_adapter_note

    t, bb, feat, method, model = setup(tiny_llama, "causal_lm", {"cache": "off"}, task="dolly", n=4, max_length=48)
    with torch.no_grad():  # a side network that changes the answer
        model.side.up.weight.normal_(0, 1.0)
        model.side.attention.out.weight.normal_(0, 1.0)
    method.save(model, tmp_path / "adapter")
    write_adapter_note(tmp_path / "adapter", method, bb, t, {"max_length": 48})
    model.eval()
    prompt = bb.tokenizer("Write a word.")["input_ids"]
    ids = torch.tensor([prompt])
    want = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                          pad_token_id=bb.tokenizer.pad_token_id, eos_token_id=bb.tokenizer.eos_token_id)
    talker = open_talker(str(tiny_llama), tmp_path / "adapter", device="cpu")
    text = "".join(talker.complete("Write a word.", Sampling(max_new_tokens=6, temperature=0.0)))
    assert text == bb.tokenizer.decode(want[0, len(prompt):], skip_special_tokens=True)
    sampled = "".join(talker.complete("Write a word.", Sampling(max_new_tokens=6, temperature=0.8, top_p=0.9)))
    assert isinstance(sampled, str)


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    from edgeft.methods.pac.model import _nucleus

    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert torch.equal(_nucleus(p, 0.7), torch.tensor([[0.5, 0.3, 0.0, 0.0]]))
    assert torch.equal(_nucleus(p, None), p) and torch.equal(_nucleus(p, 0.4), torch.tensor([[0.5, 0.0, 0.0, 0.0]]))


def test_fill_precision_changes_only_a_cuda_fill_and_restores_the_runs_tf32_setting():
    """fill_precision=tf32 takes TF32 products on CUDA only, for the fill only: the run's own setting comes back."""
    from contextlib import nullcontext

    from edgeft.methods.pac.streaming import fill_numerics
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert isinstance(fill_numerics("tf32", cpu), nullcontext)
    assert isinstance(fill_numerics("bf16", cpu), nullcontext)
    assert isinstance(fill_numerics("run", cuda), nullcontext)
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with fill_numerics("tf32", cuda):
            assert torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_each_device_of_a_collaborative_run_gets_its_own_disk_cache_folder(tmp_path, tiny_llama):
    """Ranks of one run on one host would otherwise open one folder, which the store refuses (one writer)."""
    t = load_task(TaskConfig(name="sst2", train_samples=8, dev_samples=4, max_length=16))
    bb = load_backbone(str(tiny_llama), head="causal_lm", num_labels=t.num_labels)
    models = []
    for device in ("phone-1", "phone/2"):
        method = get_method("pac", {"cache": "disk", "cache_dir": str(tmp_path)})
        method.run_as(device)
        models.append(method.prepare(bb, t))
    assert [m.cache.store.dir for m in models] == [tmp_path / "phone-1", tmp_path / "phone_2"]
    alone = get_method("pac", {"cache": "disk", "cache_dir": str(tmp_path / "one")}).prepare(bb, t)
    assert alone.cache.store.dir == tmp_path / "one"  # a single process: the folder as given
    for m in models + [alone]:
        m.cache.close()
