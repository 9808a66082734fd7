"""Mixed precision (edgeft.train.precision): auto is fp32 on CPU, bf16 follows fp32, fp16 scales its loss."""

import math

import pytest
import torch

from edgeft.errors import ConfigError
from edgeft.train.loop import Trainer, TrainConfig
from edgeft.train.optim import build_optimizer
from edgeft.train import precision as precision_module
from edgeft.train.precision import AgreedScale, Precision, cpu_supports_fp16, resolve_precision
from edgeft.train.recipe import config_from_dict, make_loss_fn
from edgeft.train.setup import start_session

TASK = {"name": "sst2", "train_samples": 48, "dev_samples": 8, "max_length": 24}


def _train(model_dir, method: str, precision: str, epochs: int = 3, lr: float = 5e-3, dtypes: list | None = None,
           frozen_scope: str | None = None, **options):
    """Losses of a run on the tiny model; `dtypes` collects the dtype of the first block's q_proj output."""
    session = start_session(str(model_dir), TASK, method, options or None, seed=0)
    model = session.prepare()
    if dtypes is not None:
        q = next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn.q_proj"))
        q.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=lr, device="cpu", precision=precision, seed=0)
    trainer = Trainer(model, session.method, session.featurizer, session.featurizer.encode(session.task.train), cfg,
                      make_loss_fn(session.featurizer))
    if frozen_scope:  # what the Trainer does on CUDA, here on the CPU
        trainer.precision.device = torch.device("cuda")
        trainer.frozen_cast = trainer.precision.cast_frozen(model, frozen_scope)
        trainer.precision.device = torch.device("cpu")
    return trainer, trainer.fit().losses


def test_auto_is_fp32_on_cpu_and_changes_nothing(sst2_llama):
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "fp32"  # for now (measured slower and NaN-prone on an H200)
    assert Precision("auto", "cpu").dtype is None
    dtypes = []
    _, auto = _train(sst2_llama, "lora", "auto", epochs=1, dtypes=dtypes)
    _, fp32 = _train(sst2_llama, "lora", "fp32", epochs=1)
    assert auto == fp32  # bit-identical: no autocast, no scaling
    assert set(dtypes) == {torch.float32}


def test_bf16_loss_curve_follows_fp32(sst2_llama):
    dtypes = []
    _, bf16 = _train(sst2_llama, "lora", "bf16", epochs=6, dtypes=dtypes)
    _, fp32 = _train(sst2_llama, "lora", "fp32", epochs=6)
    assert torch.bfloat16 in dtypes  # the matrix products really ran in bf16
    assert bf16 != fp32  # so the losses differ in their last bits ...
    gap = max(abs(a - b) for a, b in zip(bf16, fp32))
    assert gap < 0.02, gap  # ... but follow the fp32 curve step by step (36 steps; measured gap 0.0024)
    first, last = sum(bf16[:6]) / 6, sum(bf16[-6:]) / 6  # 6 steps an epoch
    assert last < first - 0.03  # and it trains as fp32 does
    assert abs(last - sum(fp32[-6:]) / 6) < 0.01


@pytest.mark.parametrize("scope", ["linear", "all"])
def test_bf16_with_the_frozen_backbone_stored_in_bf16_follows_fp32(sst2_llama, scope):
    """LoRA with its frozen weights stored in bf16 as on CUDA (all: embeddings and norms too, the residual stream in
    bf16) trains as fp32 does, its adapters still fp32."""
    trainer, bf16 = _train(sst2_llama, "lora", "bf16", epochs=2, frozen_scope=scope)
    _, fp32 = _train(sst2_llama, "lora", "fp32", epochs=2)
    assert trainer.frozen_cast > 0
    assert all(p.dtype == torch.float32 for p in trainer.params)
    gap = max(abs(a - b) for a, b in zip(bf16, fp32))
    assert gap < 0.02, gap


def test_bf16_runs_forward_only_methods_under_autocast(sst2_llama):
    dtypes = []
    _, losses = _train(sst2_llama, "mezo", "bf16", epochs=1, dtypes=dtypes)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(math.isfinite(x) for x in losses)


@pytest.mark.skipif(not cpu_supports_fp16(), reason="this torch has no fp16 autocast on the CPU")
def test_fp16_scales_the_loss_with_gradscaler(sst2_llama):
    trainer, losses = _train(sst2_llama, "lora", "fp16", epochs=1)
    assert isinstance(trainer.precision.scaler, torch.amp.GradScaler)
    assert all(math.isfinite(x) for x in losses)
    assert 1.0 <= trainer.precision.scaler.get_scale() <= 2.0**16


@pytest.mark.skipif(not cpu_supports_fp16(), reason="this torch has no fp16 autocast on the CPU")
def test_fp16_skips_a_step_whose_gradients_overflow():
    lin = torch.nn.Linear(4, 1)
    prec = Precision("fp16", "cpu")
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1)
    before = [p.detach().clone() for p in lin.parameters()]
    with prec.autocast():
        loss = lin(torch.full((2, 4), 60000.0)).float().pow(2).sum()  # scaled by 2**16: overflows
    (loss * prec.scale(1.0)).backward()
    assert not prec.step(opt, list(lin.parameters()), 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, lin.parameters()))  # skipped
    assert prec.scaler.get_scale() == 2.0**15  # and scaled down
    opt.zero_grad()
    with prec.autocast():
        loss = lin(torch.full((1, 4), 0.01)).float().sum()  # one row: the bias gradient is the scale itself
    (loss * prec.scale(1.0)).backward()
    assert prec.step(opt, list(lin.parameters()), 1.0)
    assert not all(torch.equal(a, b) for a, b in zip(before, lin.parameters()))


def test_agreed_scale_skips_and_recovers_like_gradscaler():
    s = AgreedScale(init=8.0, interval=2)
    assert not s.update(False) and s.scale == 4.0
    assert s.update(True) and s.scale == 4.0
    assert s.update(True) and s.scale == 8.0  # grows after `interval` clean steps
    prec = Precision("bf16", "cpu", agreed=True)
    assert not prec.scales_loss and prec.agree(float("inf"))  # bf16 never scales or skips


def test_bad_precision_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"train\.precision"):
        config_from_dict({"task": {"name": "sst2"}, "train": {"precision": "fp64"}}, "my.yaml")
    from edgeft.federated.config import FederatedConfig

    with pytest.raises(ConfigError, match=r"precision"):
        FederatedConfig.load(None, {"algorithm": "fedit", "precision": "half"})
    from edgeft.runtime.spec import RuntimeTrain

    assert RuntimeTrain(precision="bf16").precision == "bf16"  # launch's train section takes it too
    with pytest.raises(ConfigError, match="precision 'fp8'"):
        resolve_precision("fp8", "cpu")


def test_adamw_is_fused_on_cuda_only():
    p = torch.nn.Parameter(torch.zeros(3))
    opt, _ = build_optimizer([p], TrainConfig(), 1e-3, 10)
    assert not opt.defaults.get("fused")  # CPU: the default implementation, bit-identical to before
    if torch.cuda.is_available():
        q = torch.nn.Parameter(torch.zeros(3, device="cuda"))
        opt, _ = build_optimizer([q], TrainConfig(), 1e-3, 10)
        assert opt.defaults["fused"]


def test_cast_frozen_stores_only_frozen_linear_weights_in_the_compute_dtype():
    """Frozen Linear weights go to bf16 once (autocast would re-cast them every forward); trained weights,
    embeddings, an LM head tied to them and norms stay fp32; nothing happens on CPU."""
    emb = torch.nn.Embedding(10, 4)
    frozen, trained, head, norm = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 10, bias=False), \
        torch.nn.LayerNorm(4)
    head.weight = emb.weight  # tied, as in SmolLM2
    model = torch.nn.ModuleList([emb, frozen, trained, head, norm])
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained.parameters():
        p.requires_grad_(True)
    on_cpu = Precision("bf16", "cpu")
    assert on_cpu.cast_frozen(model) == 0 and frozen.weight.dtype == torch.float32
    on_gpu = Precision("bf16", "cpu")
    on_gpu.device = torch.device("cuda")  # the selection rule, without a GPU
    assert on_gpu.cast_frozen(model) == 2
    assert frozen.weight.dtype == frozen.bias.dtype == torch.bfloat16
    assert trained.weight.dtype == emb.weight.dtype == head.weight.dtype == norm.weight.dtype == torch.float32
    assert Precision("fp32", "cpu").cast_frozen(model) == 0


def _frozen_toy():
    emb = torch.nn.Embedding(10, 4)
    frozen, trained, head, norm = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 10, bias=False), \
        torch.nn.LayerNorm(4)
    head.weight = emb.weight  # tied, as in SmolLM2
    model = torch.nn.ModuleList([emb, frozen, trained, head, norm])
    model.register_buffer("inv_freq", torch.ones(2))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained.parameters():
        p.requires_grad_(True)
    gpu = Precision("bf16", "cpu")
    gpu.device = torch.device("cuda")  # the selection rule, without a GPU
    return model, gpu, (emb, frozen, trained, head, norm)


def test_cast_frozen_all_stores_every_frozen_parameter_in_the_compute_dtype():
    """scope all: embeddings (and the tied head, once), norms and frozen Linears in bf16, so the residual stream is
    bf16; trained weights and buffers stay fp32. FROZEN_CAST is the default scope."""
    model, gpu, (emb, frozen, trained, head, norm) = _frozen_toy()
    assert gpu.cast_frozen(model, "all") == 5  # embedding (= head), frozen weight and bias, norm weight and bias
    assert emb.weight.dtype == head.weight.dtype == frozen.weight.dtype == norm.weight.dtype == torch.bfloat16
    assert trained.weight.dtype == trained.bias.dtype == model.inv_freq.dtype == torch.float32
    with pytest.raises(ConfigError, match="linear or all"):
        gpu.cast_frozen(model, "some")
    assert precision_module.FROZEN_CAST == "linear"  # the default until a GPU run says otherwise
    model, gpu, (emb, *_ ) = _frozen_toy()
    precision_module.FROZEN_CAST = "all"
    try:
        assert gpu.cast_frozen(model) == 5 and emb.weight.dtype == torch.bfloat16
    finally:
        precision_module.FROZEN_CAST = "linear"


def test_cast_frozen_stops_peft_casting_lora_inputs_up(sst2_llama):
    """Under autocast PEFT's up-cast of a LoRA layer's input to its fp32 weights is undone by autocast at once: off
    wherever frozen weights are cast (CUDA mixed precision), left alone elsewhere."""
    session = start_session(str(sst2_llama), TASK, "lora", None, seed=0)
    model = session.method.place(session.prepare(), "cpu")
    lora = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "_cast_input_dtype")]
    assert lora and all(getattr(m, "cast_input_dtype_enabled", True) for m in lora)
    Precision("bf16", "cpu").cast_frozen(model)
    assert all(getattr(m, "cast_input_dtype_enabled", True) for m in lora)  # CPU: nothing changes
    gpu = Precision("bf16", "cpu")
    gpu.device = torch.device("cuda")
    gpu.cast_frozen(model, "all")
    assert not any(m.cast_input_dtype_enabled for m in lora)
    x = torch.randn(2, 3, model.config.hidden_size).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lora[0](x).dtype == torch.bfloat16  # the base product and the adapter both in bf16


def test_tf32_is_cuda_only_and_set_by_each_precision_built_there():
    assert resolve_precision("tf32", "cuda") == "tf32"
    with pytest.raises(ConfigError, match="tf32"):
        resolve_precision("tf32", "cpu")
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        tf32 = Precision("tf32", "cuda")
        assert tf32.dtype is None and not tf32.scales_loss and torch.backends.cuda.matmul.allow_tf32
        Precision("fp32", "cuda")
        assert not torch.backends.cuda.matmul.allow_tf32  # the next run in this process is fp32 again
        torch.backends.cuda.matmul.allow_tf32 = True
        Precision("fp32", "cpu")
        assert torch.backends.cuda.matmul.allow_tf32  # a CPU run leaves CUDA's setting alone
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_auto_is_bf16_on_a_bf16_gpu_only_once_the_switch_is_flipped(monkeypatch):
    assert precision_module.AUTO_BF16_ON_CUDA is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == "fp32"
    monkeypatch.setattr(precision_module, "AUTO_BF16_ON_CUDA", True)
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp32"


def test_cuda_autocast_keeps_attention_off_cudnn_sdpa():
    """cuDNN's SDPA backward gives NaN query gradients with a mask at 64 mod 128 tokens (pytorch#196678): mixed
    precision on CUDA runs its forwards with that backend switched off, and only there."""
    gpu = Precision("bf16", "cpu")
    gpu.device = torch.device("cuda")  # the context's choice, without a GPU
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with gpu.autocast():
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with Precision("bf16", "cpu").autocast():
        assert torch.backends.cuda.cudnn_sdp_enabled() == before


@pytest.mark.skipif(not cpu_supports_fp16(), reason="this torch has no fp16 autocast on the CPU")
def test_a_precision_this_cpu_emulates_is_called_out_before_training(monkeypatch, tmp_path, tiny_llama):
    """--precision fp16 on a CPU without fp16 arithmetic trained ~60x slower than fp32, silently (one SmolLM2 LoRA
    step: 146 s). The note names the slowdown and the faster choice; a precision that runs fast says nothing."""
    from edgeft.train import precision as P
    from edgeft.train.recipe import config_from_dict, run_finetune

    speed = {torch.float32: 1.0, torch.bfloat16: 0.5, torch.float16: 60.0}  # this project's EPYC, roughly
    monkeypatch.setattr(P, "_matmul_s", lambda dtype, *a, **k: speed[dtype])
    assert P.cpu_precision_notes("fp16", "cpu") == [
        "--precision fp16: this CPU multiplies fp16 matrices 60x slower than fp32 (it has no native fp16 "
        "arithmetic), so training will be slower, not faster; use bf16 (2.0x fp32's speed here) or fp32."]
    assert P.cpu_precision_notes("bf16", "cpu") == P.cpu_precision_notes("fp32", "cpu") == []
    assert P.cpu_precision_notes("fp16", "cuda") == []
    said = []
    run_finetune(config_from_dict({
        "model": str(tiny_llama), "method": "lora", "out": str(tmp_path / "run"),
        "task": {"name": "sst2", "train_samples": 8, "dev_samples": 4, "max_length": 24},
        "train": {"epochs": 1, "batch_size": 8, "precision": "fp16"}}), say=said.append)
    assert any("60x slower than fp32" in line for line in said)
